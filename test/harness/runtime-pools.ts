/**
 * Runtimes on one server, each made by name and all stopped together: the
 * two backends of the `*.both` tests (runtimes sharing one memory server, or
 * one nats-server), with the options every runtime of the test takes.
 */
import type { RuntimeOptions } from "../../src/api/options.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import {
  createMemoryBroker,
  createMemoryServer,
  createTestRuntime,
  type MemoryServer,
} from "../../src/testing.ts";

export interface RuntimePool {
  readonly name: "memory" | "nats";
  runtime(name: string): Promise<Runtime>;
  /** Stops every runtime made, in the order made. */
  stop(): Promise<void>;
}

const pool = (name: RuntimePool["name"], make: (name: string) => Promise<Runtime>): RuntimePool => {
  const runtimes: Runtime[] = [];
  return {
    name,
    async runtime(runtimeName) {
      const rt = await make(runtimeName);
      runtimes.push(rt);
      return rt;
    },
    async stop() {
      for (const rt of runtimes.splice(0)) await rt.stop();
    },
  };
};

/** Runtimes sharing one memory server (a new one unless given). */
export const memoryPool = (
  options: RuntimeOptions = {},
  server: MemoryServer = createMemoryServer(),
): RuntimePool =>
  pool("memory", (name) => createTestRuntime({ ...options, name, broker: createMemoryBroker({ server }) }));

/** Runtimes on the nats-server at `url`, logging nothing. */
export const natsPool = (url: string, options: RuntimeOptions = {}): RuntimePool =>
  pool("nats", (name) => createRuntime({ logger: silentLogger(), ...options, servers: url, name }));
