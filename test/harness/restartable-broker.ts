import type { Logger } from "pino";
import { createNatsBroker, type NatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { type NatsServerHandle, startNatsServer } from "./nats-server.ts";

export interface RestartableBroker {
  readonly server: NatsServerHandle;
  readonly broker: NatsBroker;
  /** The broker closed, its client's runtime core stopped, the server disposed. */
  dispose(): Promise<void>;
}

/**
 * A nats-server of the test's own and a NATS broker on it (no runtime
 * around it), whose client rides out the server's restarts: it reconnects
 * every 100 ms, for a minute.
 */
export const startRestartableBroker = async (holder: string, logger: Logger): Promise<RestartableBroker> => {
  const server = await startNatsServer();
  const core = await createRuntimeCore({
    servers: server.url,
    logger,
    connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
  });
  const broker = createNatsBroker(core, { retentionMs: 3600_000, holder });
  return {
    server,
    broker,
    dispose: async () => {
      await broker.close();
      await core.stop();
      await server.dispose();
    },
  };
};
