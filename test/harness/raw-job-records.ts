/** Job records read without jetstate's code (`liveEntries`: the server's stream, then raw KV reads). */
import type { NatsConnection } from "@nats-io/transport-node";
import { liveEntries } from "./kv-keys.ts";

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
  readonly updatedAt: number;
  readonly finishedAt?: number;
  readonly reason?: string;
}

export const rawJobRecords = async (nc: NatsConnection, bucket: string): Promise<RawRecord[]> =>
  (await liveEntries(nc, bucket)).map(({ entry }) => entry.json<RawRecord>());
