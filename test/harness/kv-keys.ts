import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";

/**
 * The keys of a KV bucket that hold a value now, read from the server's
 * stream (its subjects, then each key's last entry), not through nats.js
 * `kv.keys()`, whose ordered consumer a loaded run saw come back empty.
 */
export const liveKeys = async (nc: NatsConnection, bucket: string, filter = ">"): Promise<string[]> => {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams
    .info(`KV_${bucket}`, { subjects_filter: `$KV.${bucket}.${filter}` })
    .catch(() => undefined);
  if (!info) return []; // no bucket yet: nothing stored
  const kv = await new Kvm(nc).open(bucket);
  const keys: string[] = [];
  for (const subject of Object.keys(info.state.subjects ?? {})) {
    const key = subject.slice(`$KV.${bucket}.`.length);
    if ((await kv.get(key))?.operation === "PUT") keys.push(key);
  }
  return keys;
};
