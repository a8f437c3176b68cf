import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";

/** A queue's record as the server stores it: its KV operation and limit. */
export type StoredQueueRecord = { operation: string; maxConcurrency?: number } | "none";

/**
 * The queue's record as the server holds it, read raw on the test's own
 * connection (not through the broker under test): its KV operation and
 * limit; "none" when no message of its key is stored (the bucket missing,
 * or empty of it).
 */
export const storedQueueRecord = async (
  nc: NatsConnection,
  queuesBucket: string,
  queue: string,
): Promise<StoredQueueRecord> => {
  const jsm = await jetstreamManager(nc);
  const message = await jsm.streams
    .getMessage(`KV_${queuesBucket}`, { last_by_subj: `$KV.${queuesBucket}.${queue}` })
    .catch(() => null);
  if (!message) return "none";
  const operation = message.header?.get("KV-Operation") || "PUT";
  return operation === "PUT"
    ? { operation, maxConcurrency: (message.json() as { maxConcurrency?: number }).maxConcurrency }
    : { operation };
};
