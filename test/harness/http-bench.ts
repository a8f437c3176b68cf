import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll } from "vitest";
import type { RuntimeOptions } from "../../src/api/options.ts";
import { createHttpApi, createRuntime, type Runtime } from "../../src/index.ts";
import type { Clock } from "../../src/kernel/clock.ts";
import { type Logger, silentLogger } from "../../src/kernel/logger.ts";
import {
  createMemoryBroker,
  createMemoryServer,
  createTestRuntime,
  type MemoryServer,
} from "../../src/testing.ts";
import { type ServedApp, serveOnLoopback } from "./http-server.ts";
import { type NatsServerHandle, startNatsServer } from "./nats-server.ts";

/** What `useHttpBench` makes in `beforeAll`: read it in a test. */
export interface HttpBench {
  /** The runtime the HTTP API is served from. */
  readonly rt: Runtime;
  readonly http: ServedApp;
  /** The test's own connection to the server, the oracle (NATS; undefined on memory). */
  readonly nc: NatsConnection | undefined;
  /** The memory server, read directly (memory; undefined on NATS). */
  readonly memory: MemoryServer | undefined;
}

export interface HttpBenchOptions {
  /** The API's bearer tokens, each to its worker name. */
  readonly tokens: Record<string, string>;
  /** Default: silent. */
  readonly logger?: Logger;
  /** The memory server's clock (default: the wall clock). */
  readonly clock?: Clock;
  /** The runtime's `jobs` options. */
  readonly jobs?: RuntimeOptions["jobs"];
}

/**
 * A server of the block's own (a nats-server, or a memory server), one runtime on it and its
 * HTTP API served on loopback: made in `beforeAll`, all closed in `afterAll`.
 */
export const useHttpBench = (
  kind: "memory" | "nats",
  { tokens, logger = silentLogger(), clock, jobs }: HttpBenchOptions,
): HttpBench => {
  let server: NatsServerHandle | undefined;
  let made: HttpBench | undefined;
  beforeAll(async () => {
    let rt: Runtime;
    let nc: NatsConnection | undefined;
    let memory: MemoryServer | undefined;
    if (kind === "nats") {
      server = await startNatsServer();
      nc = await connect({ servers: server.url, name: "oracle" });
      rt = await createRuntime({ servers: server.url, logger, ...(jobs && { jobs }) });
    } else {
      memory = createMemoryServer({ prefix: "jetstate", ...(clock && { clock }) });
      rt = await createTestRuntime({
        logger,
        broker: createMemoryBroker({ server: memory }),
        ...(jobs && { jobs }),
      });
    }
    made = { rt, nc, memory, http: await serveOnLoopback(createHttpApi(rt, { tokens }).fetch) };
  });
  afterAll(async () => {
    await made?.http.close();
    await made?.rt.stop();
    await made?.nc?.close();
    made?.memory?.close();
    await server?.dispose();
  });
  const get = (): HttpBench => {
    if (!made) throw new Error("the HTTP bench is made in beforeAll: read it in a test");
    return made;
  };
  return {
    get rt() {
      return get().rt;
    },
    get http() {
      return get().http;
    },
    get nc() {
      return get().nc;
    },
    get memory() {
      return get().memory;
    },
  };
};
