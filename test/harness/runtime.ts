import { afterAll, beforeAll } from "vitest";
import type { RuntimeOptions } from "../../src/api/options.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createMemoryBroker, createTestRuntime } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "./nats-server.ts";

/**
 * A nats-server of its own and a runtime on it for one describe block:
 * started in `beforeAll`, stopped (runtime first) and removed in `afterAll`.
 * `onStarted` hands both over once they are up.
 */
export const useNatsRuntime = (
  options: Omit<RuntimeOptions, "servers">,
  onStarted: (started: { server: NatsServerHandle; rt: Runtime }) => void,
): void => {
  let server: NatsServerHandle | undefined;
  let rt: Runtime | undefined;
  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({ ...options, servers: server.url });
    onStarted({ server, rt });
  });
  afterAll(async () => {
    await rt?.stop();
    await server?.dispose();
  });
};

/**
 * `useNatsRuntime` for a `describe.each(["memory", "nats"])` block: on
 * "memory" a runtime on a memory broker of its own, with no server.
 */
export const useRuntimeOn = (
  kind: "memory" | "nats",
  options: Omit<RuntimeOptions, "servers">,
  onStarted: (rt: Runtime) => void | Promise<void>,
): void => {
  if (kind === "nats") {
    let started: Runtime | undefined;
    useNatsRuntime(options, ({ rt }) => {
      started = rt;
    });
    beforeAll(async () => onStarted(started as Runtime));
    return;
  }
  let rt: Runtime | undefined;
  beforeAll(async () => {
    rt = await createTestRuntime({ ...options, broker: createMemoryBroker() });
    await onStarted(rt);
  });
  afterAll(async () => {
    await rt?.stop();
  });
};
