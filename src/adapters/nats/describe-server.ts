import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { childLogger } from "../../kernel/logger.ts";
import type { NatsContext } from "./nats-context.ts";

/** What the first server a runtime reaches says about itself and its cluster. */
interface ServerDescription {
  readonly server: string | undefined;
  readonly version: string | undefined;
  readonly cluster: string | undefined;
  /** Servers known in the cluster (this one and those it gossips), 1 without a cluster. */
  readonly servers: number;
  readonly jetstreamDomain: string | undefined;
}

/**
 * The server and cluster from the client's INFO (`nc.info`) and the
 * account's JetStream info: a client sees its cluster's servers as the
 * client URLs the server gossips (`connect_urls`), itself included.
 */
const serverDescription = async (nc: NatsConnection): Promise<ServerDescription> => {
  const info = nc.info;
  const account = await (await jetstreamManager(nc)).getAccountInfo();
  const cluster = info?.cluster;
  const gossiped = new Set(info?.connect_urls ?? []).size;
  return {
    server: info?.server_name,
    version: info?.version,
    cluster,
    servers: cluster ? Math.max(1, gossiped) : 1,
    jetstreamDomain: account.domain,
  };
};

/**
 * Once, at the first connect: one `info` line describing the server and its
 * cluster, and a warning when `replicas` asks for more copies than there are
 * servers to hold them (the server refuses to create such a stream).
 * Waits for the connection as long as the runtime lives; never fails the runtime.
 */
export const describeServer = async (core: NatsContext, replicas: number): Promise<void> => {
  const log = childLogger(core.logger, { actor: "runtime" });
  let nc: NatsConnection;
  try {
    nc = await core.connection.whenConnected(core.stopping);
  } catch {
    return; // stopped before it ever connected
  }
  try {
    const d = await serverDescription(nc);
    log.info(
      { ...d, replicas },
      d.cluster
        ? `connected to ${d.server} (nats-server ${d.version}) in cluster ${d.cluster} of ${d.servers} known servers; streams made with ${replicas} replica(s)`
        : `connected to ${d.server} (nats-server ${d.version}), no cluster; streams made with ${replicas} replica(s)`,
    );
    if (replicas > d.servers)
      log.warn(
        { replicas, servers: d.servers, cluster: d.cluster ?? null },
        `replicas is ${replicas} but only ${d.servers} server(s) are known${d.cluster ? ` in cluster ${d.cluster}` : " (no cluster)"}: ` +
          "the server refuses to create a stream with more replicas than servers",
      );
  } catch (error) {
    if (core.stopping.aborted) return;
    // A server with JetStream off: the connection says so once, in its own words (no-jetstream.ts).
    if (nc.info?.jetstream !== true)
      log.debug({ err: error }, "server not described (JetStream account info failed)");
    else log.warn({ err: error }, "server not described (JetStream account info failed)");
  }
};
