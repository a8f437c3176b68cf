import { jetstreamManager } from "@nats-io/jetstream";
import { type KvEntry, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";

/**
 * The entries of a KV bucket that hold a value now, read from the server's
 * stream (its subjects, one request, then each key's last entry), not
 * through nats.js `kv.keys()`: its ordered consumer was seen to hang for half
 * a minute on a bucket rewritten while it listed, and to come back empty in
 * a loaded run.
 */
export const liveEntries = async (
  nc: NatsConnection,
  bucket: string,
  filter = ">",
): Promise<Array<{ key: string; entry: KvEntry }>> => {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams
    .info(`KV_${bucket}`, { subjects_filter: `$KV.${bucket}.${filter}` })
    .catch(() => undefined);
  if (!info) return []; // no bucket yet: nothing stored
  const kv = await new Kvm(nc).open(bucket);
  const found: Array<{ key: string; entry: KvEntry }> = [];
  for (const subject of Object.keys(info.state.subjects ?? {})) {
    const key = subject.slice(`$KV.${bucket}.`.length);
    const entry = await kv.get(key);
    if (entry?.operation === "PUT") found.push({ key, entry });
  }
  return found;
};

/** The keys of `liveEntries`. */
export const liveKeys = async (nc: NatsConnection, bucket: string, filter = ">"): Promise<string[]> =>
  (await liveEntries(nc, bucket, filter)).map(({ key }) => key);
