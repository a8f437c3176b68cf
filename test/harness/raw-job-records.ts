/** Job records read without jetstate's code (`liveEntries`: the server's stream, then raw KV reads). */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { brokerNames } from "../../src/adapters/names.ts";
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
  readonly counts: { readonly done: number; readonly failed: number; readonly dead: number };
}

export const rawJobRecords = async (nc: NatsConnection, bucket: string): Promise<RawRecord[]> =>
  (await liveEntries(nc, bucket)).map(({ entry }) => entry.json<RawRecord>());

/** One job's record, read raw on a connection of its own to `url` (undefined: none stored). */
export const rawJobRecord = async (
  url: string,
  id: string,
  bucket = brokerNames("jetstate").jobsBucket,
): Promise<RawRecord | undefined> => {
  const nc = await connect({ servers: url });
  try {
    return (await rawJobRecords(nc, bucket)).find((r) => r.id === id);
  } finally {
    await nc.close();
  }
};
