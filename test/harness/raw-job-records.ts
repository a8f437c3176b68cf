/**
 * Job records read without jetstate's code: the subjects the bucket's stream
 * holds (one request), then one raw KV read each. Not `kv.keys()`: its
 * ordered consumer was seen to hang for half a minute on a bucket whose
 * records are rewritten while it lists them.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";

/** The fields of a stored job record the schedule tests look at. */
export interface RawRecord {
  readonly id: string;
  readonly queue: string;
  readonly phase: string;
  readonly status: string;
  readonly idempotencyKey?: string;
  readonly submitId: string;
  /** When a submit still in progress counts as dead (ms since the epoch). */
  readonly commitDeadline: number;
}

export const rawJobRecords = async (nc: NatsConnection, bucket: string): Promise<RawRecord[]> => {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: ">" }).catch(() => undefined);
  const kv = await new Kvm(nc).open(bucket);
  const found: RawRecord[] = [];
  for (const subject of Object.keys(info?.state.subjects ?? {})) {
    const entry = await kv.get(subject.slice(`$KV.${bucket}.`.length));
    if (entry?.operation === "PUT") found.push(entry.json<RawRecord>());
  }
  return found;
};
