import { afterAll, beforeAll } from "vitest";
import { type NatsServerHandle, startNatsServer } from "./nats-server.ts";
import { natsPool, type RuntimePool } from "./runtime-pools.ts";

/**
 * A nats-server of the describe block's own, for its tests to restart with an empty store
 * (`restartEmpty`), and a pool of runtimes on it that reconnect within a tenth of a second
 * (for as long as the restart takes): both stopped after the block.
 */
export const useStoreResetPool = () => {
  let server: NatsServerHandle | undefined;
  let runtimes: RuntimePool | undefined;
  beforeAll(async () => {
    server = await startNatsServer();
    runtimes = natsPool(server.url, {
      connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 1000 },
      jobs: { cleanupIntervalMs: 0 },
    });
  });
  afterAll(async () => {
    await runtimes?.stop();
    await server?.dispose();
  });
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error("the server is started in beforeAll: read it in a test");
    return value;
  };
  return {
    get server() {
      return started(server);
    },
    get runtimes() {
      return started(runtimes);
    },
  };
};
