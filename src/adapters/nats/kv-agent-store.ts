import { JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { type AgentRecord, parseAgentRecord } from "../../kernel/agent-record.ts";
import { InvalidArgument, RevisionConflict } from "../../kernel/errors.ts";
import { childLogger } from "../../kernel/logger.ts";
import type { AgentStore, StoredAgent } from "../agent-store.ts";
import { classifyNatsError } from "./classify-error.ts";
import { ClientSetups } from "./client-setups.ts";
import type { NatsContext } from "./nats-context.ts";
import { ensureBucket, Replicas } from "./streams.ts";

/**
 * Agent records in a NATS KV bucket, one key per agent. The KV revision is
 * the CAS token: `create` fails on an existing key and `update` on a stale
 * revision, both with JetStream API error 10071, which is exactly the
 * "another process decided first" signal the lock protocol re-reads on.
 */

const AGENTS_BUCKET = "jetstate_agents";

/** JetStream "wrong last sequence": the CAS expectation did not hold. */
const WRONG_LAST_SEQUENCE = 10071;

// KV's own key rule; checked here so a bad agent id is a typed InvalidArgument, not a bare Error.
const validKey = /^[-/=.\w]+$/;

const keyFor = (agentId: string): string => {
  if (agentId.startsWith(".") || agentId.endsWith(".") || !validKey.test(agentId)) {
    throw new InvalidArgument({
      field: "agentId",
      message: `agent id ${JSON.stringify(agentId)} cannot be a KV key (letters, digits, - / _ = . only)`,
    });
  }
  return agentId;
};

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** CAS losses become RevisionConflict (the protocol re-reads on it); the rest goes through the shared mapper. */
const mapError = (error: unknown, agentId: string, operation: string): Error => {
  if (error instanceof JetStreamApiError && error.code === WRONG_LAST_SEQUENCE) {
    return new RevisionConflict({ key: agentId, message: `agent ${agentId}: ${operation} lost a CAS race` });
  }
  if (error instanceof InvalidArgument) return error;
  return classifyNatsError(error, operation);
};

const attempt = async <A>(agentId: string, operation: string, run: () => Promise<A>): Promise<A> => {
  try {
    return await run();
  } catch (error) {
    throw mapError(error, agentId, operation);
  }
};

export const kvAgentStore = (kv: KV): AgentStore => ({
  read: (agentId) =>
    attempt(agentId, "agents.read", async (): Promise<StoredAgent | undefined> => {
      const entry = await kv.get(keyFor(agentId));
      // A deleted or purged key still returns an entry, marked by its operation.
      if (entry === null || entry.operation !== "PUT") return undefined;
      const record = parseAgentRecord(agentId, JSON.parse(decoder.decode(entry.value)));
      return { record, revision: entry.revision };
    }),
  // Keys, then one read each: agents are few and their keys are rarely written.
  list: () =>
    attempt("*", "agents.list", async () => {
      const agents: Array<{ agentId: string; record: AgentRecord }> = [];
      for await (const agentId of await kv.keys()) {
        const entry = await kv.get(agentId);
        if (entry === null || entry.operation !== "PUT") continue;
        agents.push({ agentId, record: parseAgentRecord(agentId, JSON.parse(decoder.decode(entry.value))) });
      }
      return agents;
    }),
  create: (agentId, record: AgentRecord) =>
    attempt(agentId, "agents.create", () =>
      kv.create(keyFor(agentId), encoder.encode(JSON.stringify(record))),
    ),
  update: (agentId, record: AgentRecord, revision: number) =>
    attempt(agentId, "agents.update", () =>
      kv.update(keyFor(agentId), encoder.encode(JSON.stringify(record)), revision),
    ),
});

/** The runtime's agents bucket: `jetstate_agents` under the default prefix. */
export const agentsBucketFor = (prefix: string): string => `${prefix}_agents`;

/**
 * Opens (creating if needed) the agents bucket; history 1 because only the
 * latest record matters. With `replicas`, a new bucket gets its count and an
 * existing one is checked against it.
 */
export const openAgentBucket = async (
  nc: NatsConnection,
  bucket: string = AGENTS_BUCKET,
  replicas?: Replicas,
): Promise<KV> =>
  replicas === undefined
    ? new Kvm(nc).create(bucket, { history: 1, allow_direct: false }) // reads from the leader: see ensureBucket
    : ensureBucket(nc, await jetstreamManager(nc), bucket, { history: 1 }, replicas);

const sameRecord = (a: AgentRecord, b: AgentRecord): boolean => JSON.stringify(a) === JSON.stringify(b);

/**
 * The agent store over the runtime's one supervised connection. Every call
 * runs through `core.run`: it waits for `connected`, has a deadline and
 * retries transient errors (a `RevisionConflict` is permanent, so the lock
 * re-reads and re-decides instead). The bucket is opened once per client,
 * again for the next client after a reconnect gave up, and again after an
 * operation found it missing (`setups`: the NATS broker's, so that one
 * missing stream has everything set up again).
 */
export const supervisedAgentStore = (
  core: NatsContext,
  shared: { readonly setups: ClientSetups; readonly replicas: Replicas } = {
    setups: new ClientSetups(),
    replicas: new Replicas(core.options.replicas, childLogger(core.logger, { actor: "runtime" })),
  },
  bucket = agentsBucketFor(core.options.prefix),
): AgentStore => {
  const stores = shared.setups.once<AgentStore>();
  const storeFor = (nc: NatsConnection): Promise<AgentStore> =>
    stores(nc, () => openAgentBucket(nc, bucket, shared.replicas).then(kvAgentStore));
  const run = <A>(name: string, op: (store: AgentStore) => Promise<A>): Promise<A> =>
    shared.setups.run(core, name, async (nc) => op(await storeFor(nc)));
  return {
    read: (agentId) => run("agents.read", (store) => store.read(agentId)),
    list: () => run("agents.list", (store) => store.list()),
    create: (agentId, record) => run("agents.create", (store) => store.create(agentId, record)),
    update: (agentId, record, revision) => {
      let attempts = 0;
      return run("agents.update", async (store) => {
        attempts += 1;
        try {
          return await store.update(agentId, record, revision);
        } catch (error) {
          // A retry after an unknown outcome (timeout, lost connection) can lose the CAS to our
          // own first write: that write stands, or the switch would go unannounced as "stale".
          if (attempts === 1 || !(error instanceof RevisionConflict)) throw error;
          const stored = await store.read(agentId);
          if (stored === undefined || !sameRecord(stored.record, record)) throw error;
          return stored.revision;
        }
      });
    },
  };
};
