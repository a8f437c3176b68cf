import type { Logger } from "pino";
import { createNatsBroker, type NatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { type NatsServerHandle, startNatsServer } from "./nats-server.ts";
import { waitUntil } from "./wait.ts";

export interface RestartableBroker {
  readonly server: NatsServerHandle;
  readonly broker: NatsBroker;
  /** The broker's client connection, as the runtime sees it (`reconnecting` while the server is away). */
  readonly connection: { readonly state: string };
  /** The broker closed, its client's runtime core stopped, the server disposed. */
  dispose(): Promise<void>;
}

/** A NATS broker on a client of its own (no runtime around it); `close()` ends both. */
export type ReconnectingBroker = Omit<RestartableBroker, "server" | "dispose"> & { close(): Promise<void> };

/**
 * A NATS broker (no runtime around it) on `servers`, whose client rides out
 * the server's restarts and lost connections: it reconnects every 100 ms,
 * for a minute.
 */
export const reconnectingBroker = async (
  servers: string,
  holder: string,
  logger: Logger,
): Promise<ReconnectingBroker> => {
  const core = await createRuntimeCore({
    servers,
    logger,
    connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
  });
  const broker = createNatsBroker(core, { retentionMs: 3600_000, holder });
  return {
    broker,
    connection: core.connection,
    close: async () => {
      await broker.close();
      await core.stop();
    },
  };
};

/** A nats-server of the test's own and a `reconnectingBroker` on it. */
export const startRestartableBroker = async (holder: string, logger: Logger): Promise<RestartableBroker> => {
  const server = await startNatsServer();
  const { broker, connection, close } = await reconnectingBroker(server.url, holder, logger);
  return {
    server,
    broker,
    connection,
    dispose: async () => {
      await close();
      await server.dispose();
    },
  };
};

/**
 * A watch of the broker's job records that notes each record's id as it is
 * handed over (`seen`) and each round placed (`rounds`); `inPlace()` waits
 * for the first, `stop()` ends it.
 */
export const watchedRecords = (broker: NatsBroker) => {
  const seen: string[] = [];
  let rounds = 0;
  const watching = new AbortController();
  const watch = broker.watchRecordChanges(
    (record) => {
      seen.push(record.id);
    },
    watching.signal,
    () => rounds++,
  );
  return {
    seen,
    rounds: () => rounds,
    inPlace: () => waitUntil(() => rounds > 0, { timeoutMs: 10_000, message: "the watch in place" }),
    stop: async () => {
      watching.abort();
      await watch.catch(() => undefined);
    },
  };
};
