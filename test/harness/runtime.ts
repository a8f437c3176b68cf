import { afterAll, beforeAll } from "vitest";
import type { RuntimeOptions } from "../../src/api/options.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
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
