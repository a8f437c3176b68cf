import { jetstreamManager, StorageType } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Presence } from "../presence.ts";
import { scanBucketEntries } from "./bucket-reads.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import { ensureBucket } from "./streams.ts";

/**
 * How long a stored announcement is kept at most (the bucket's max age):
 * the keys of workers that died go with it. Far longer than any sensible
 * `presenceMs`, because a bucket's age limit is one for every runtime and
 * whether an announcement still stands is each reader's call.
 */
const keptMs = 60 * 60_000;

const encoder = new TextEncoder();

/**
 * Presence in a KV bucket (`<prefix>_presence`), one key per worker. Listing
 * reads the bucket in one pass (`scanBucketEntries`, with each key's server
 * timestamp): O(live and recently dead workers), never O(jobs).
 */
export const natsPresence = (broker: NatsJobBroker): Presence & { provision(): Promise<void> } => {
  const buckets = broker.setups.once<KV>();
  const bucket = (nc: NatsConnection): Promise<KV> =>
    buckets(nc, async () =>
      ensureBucket(
        nc,
        await jetstreamManager(nc),
        broker.names.presenceBucket,
        // Memory storage: an announcement outlives neither its owner nor the server's restart.
        { history: 1, ttl: keptMs, storage: StorageType.Memory },
        broker.replicas,
      ),
    );
  return {
    provision: () => broker.run("presence.provision", async (nc) => void (await bucket(nc))),
    announce: (key, value) =>
      broker.run("presence.announce", async (nc) => {
        await (await bucket(nc)).put(key, encoder.encode(value));
      }),
    withdraw: (key) =>
      broker.run("presence.withdraw", async (nc) => {
        await (await bucket(nc)).purge(key);
      }),
    list: () =>
      broker.run("presence.list", async (nc) => {
        await bucket(nc);
        const { js, jsm } = await broker.handles(nc);
        const entries = await scanBucketEntries(js, jsm, broker.names.presenceBucket);
        return [...entries.values()].flatMap(({ value, storedAt }) =>
          value === undefined ? [] : [{ value, storedAt }],
        );
      }),
  };
};
