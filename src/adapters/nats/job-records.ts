import { JetStreamApiError, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { RevisionConflict } from "../../kernel/errors.ts";
import { decodeRecord, encodeRecord, type JobRecord } from "../../kernel/job-record.ts";
import { recordPicker, scanBound, type UnreadableRecord } from "../../kernel/list-page.ts";
import type { RecordsPage, RecordsPageQuery } from "../job-records.ts";
import type { NatsContext } from "./nats-context.ts";
import { isNoMessage, pageBucket, scanBucket, scanBucketEntries } from "./streams.ts";

/** What the records use of their broker (`NatsJobBroker`): its operations, handles and compare-and-set write. */
interface RecordsBroker extends Pick<NatsContext, "run"> {
  handles(
    nc: NatsConnection,
  ): Promise<{ readonly js: JetStreamClient; readonly jsm: JetStreamManager; readonly kv: KV }>;
  writeKey(nc: NatsConnection, bucket: string, key: string, value: string, previous: number): Promise<number>;
}

type RecordsHandles = Awaited<ReturnType<RecordsBroker["handles"]>>;

/**
 * Job records in the broker's KV bucket, compare-and-set on the revision;
 * each method one operation run through the broker (`NatsJobBroker.run`),
 * which delegates to it. Also what a watch reads decoded once (`decodeWatched`).
 */
export class NatsJobRecords {
  readonly #broker: RecordsBroker;
  readonly #bucket: string;
  readonly #decoded = new Map<string, JobRecord>();
  /** The last `decodedKept` record texts this broker wrote: a watch reads each back. */
  readonly #written = new Set<string>();

  constructor(broker: RecordsBroker, bucket: string) {
    this.#broker = broker;
    this.#bucket = bucket;
  }

  /**
   * A record as a watch reads it, decoded once for every watch of this
   * runtime (a worker's and the jobs' read each write: the decode, a parse
   * and a schema check, was ~4 % of a small job's CPU), by its text: the
   * last `decodedKept` texts are kept.
   */
  decodeWatched(text: string): JobRecord {
    const known = this.#decoded.get(text);
    if (known) return known;
    // Frozen: every watch (and a job event's reader) is handed the same object. A text this
    // broker encoded from a record is parsed without the schema check (three writes a small job,
    // each read back by the watches; the check was ~2 % of its CPU): it was a record.
    const record = frozen(this.#written.delete(text) ? (JSON.parse(text) as JobRecord) : decodeRecord(text));
    this.#decoded.set(text, record);
    if (this.#decoded.size > decodedKept) this.#decoded.delete(this.#decoded.keys().next().value as string);
    return record;
  }

  #run<A>(name: string, op: (h: RecordsHandles, nc: NatsConnection) => Promise<A>) {
    return this.#broker.run(name, async (nc) => op(await this.#broker.handles(nc), nc));
  }

  /** `encodeRecord`, the text remembered as this broker's (`decodeWatched`). */
  #encode(record: JobRecord): string {
    const text = encodeRecord(record);
    this.#written.add(text);
    if (this.#written.size > decodedKept) this.#written.delete(this.#written.values().next().value as string);
    return text;
  }

  createRecord(record: JobRecord): Promise<number> {
    return this.#run("job.record.create", ({ kv }, nc) => {
      const value = this.#encode(record);
      return (
        this.#broker
          .writeKey(nc, this.#bucket, record.id, value, 0)
          // Taken, or its last entry a delete marker, on which `kv.create` writes (its second step).
          .catch(async (error: unknown) => {
            if (!isWrongLastSequence(error)) throw error;
            const entry = await kv.get(record.id);
            if (entry?.operation !== "DEL" && entry?.operation !== "PURGE") throw error;
            return this.#broker.writeKey(nc, this.#bucket, record.id, value, entry.revision);
          })
          .catch(casConflict(record.id))
      );
    });
  }

  getRecord(id: string): Promise<{ record: JobRecord; revision: number } | undefined> {
    return this.#run("job.record.get", async ({ kv }) => {
      const entry = await kv.get(id);
      if (entry?.operation !== "PUT") return undefined;
      return { record: decodeRecord(entry.string()), revision: entry.revision };
    });
  }

  updateRecord(record: JobRecord, revision: number): Promise<number> {
    return this.#run("job.record.update", (_h, nc) =>
      this.#broker
        .writeKey(nc, this.#bucket, record.id, this.#encode(record), revision)
        .catch(casConflict(record.id)),
    );
  }

  /**
   * Removes the record at `revision` from the bucket's stream, message and
   * all: a delete of that message by sequence, not a KV delete, whose marker
   * would be the key's message for good (one a job ever cleaned up, read by
   * every page and scan). A record written since has replaced the message
   * (history 1): nothing is found, and that is the compare-and-set's
   * conflict.
   */
  deleteRecord(id: string, revision: number): Promise<void> {
    return this.#run("job.record.delete", ({ jsm }) => this.#deleteAt(jsm, id, revision));
  }

  async #deleteAt(jsm: JetStreamManager, id: string, revision: number): Promise<void> {
    const stored = await jsm.streams.getMessage(`KV_${this.#bucket}`, { seq: revision }).catch(() => null);
    // The sequence may hold another key's message after a reset store: only this key's goes.
    if (stored?.subject !== `$KV.${this.#bucket}.${id}`)
      throw new RevisionConflict({ message: `job record ${id} changed concurrently`, key: id });
    await jsm.streams.deleteMessage(`KV_${this.#bucket}`, revision, false).catch((error: unknown) => {
      if (isNoMessage(error))
        throw new RevisionConflict({ message: `job record ${id} changed concurrently`, key: id });
      throw error;
    });
  }

  listRecords(): Promise<JobRecord[]> {
    return this.#run("job.record.list", async ({ js, jsm }) =>
      [...(await scanBucket(js, jsm, this.#bucket)).values()].map(decodeRecord),
    );
  }

  /**
   * Every record, and the delete markers the bucket holds (left by versions
   * whose cleanup was a KV delete), in one pass (`scanBucketEntries`).
   */
  listRecordsAndMarkers(): Promise<{
    records: JobRecord[];
    markers: Array<{ id: string; revision: number }>;
  }> {
    return this.#run("job.record.list", async ({ js, jsm }) => {
      const records: JobRecord[] = [];
      const markers: Array<{ id: string; revision: number }> = [];
      for (const [id, { value, revision }] of await scanBucketEntries(js, jsm, this.#bucket)) {
        if (value === undefined) markers.push({ id, revision });
        else records.push(decodeRecord(value));
      }
      return { records, markers };
    });
  }

  /** Removes delete markers by sequence (one rewritten since stays); how many went. */
  removeMarkers(markers: ReadonlyArray<{ id: string; revision: number }>): Promise<number> {
    return this.#run("job.record.markers", async ({ jsm }) => {
      let removed = 0;
      for (const { id, revision } of markers) {
        const gone = await this.#deleteAt(jsm, id, revision).then(
          () => true,
          (error: unknown) => {
            if (error instanceof RevisionConflict) return false;
            throw error;
          },
        );
        if (gone) removed++;
      }
      return removed;
    });
  }

  /** One page of records, in the order of their last write (`pageBucket`). */
  listRecordsPage(query: RecordsPageQuery): Promise<RecordsPage> {
    return this.#run("job.record.page", async ({ jsm }, nc) => {
      // Filled afresh by each try of the operation (a retry reads the page again).
      const unreadable: UnreadableRecord[] = [];
      const { items, next } = await pageBucket(nc, jsm, this.#bucket, {
        after: query.after ?? 0,
        limit: query.limit,
        maxScan: query.maxScan ?? scanBound(query.limit),
        pick: recordPicker(query, unreadable),
      });
      return {
        records: items,
        ...(next === undefined ? {} : { next }),
        ...(unreadable.length === 0 ? {} : { unreadable }),
      };
    });
  }
}

/** `value` and every object in it, frozen. */
const frozen = <T>(value: T): T => {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) frozen(inner);
    Object.freeze(value);
  }
  return value;
};

/** How many decoded records the watches share (a few ms of writes at a thousand small jobs a second). */
const decodedKept = 128;

/** JetStream API "wrong last sequence" (10071), and its "unknown" form, as `kv.create` tells them. */
export const isWrongLastSequence = (error: unknown): boolean =>
  error instanceof JetStreamApiError && (error.code === 10071 || error.code === 10164);

/** KV compare-and-set failures become `RevisionConflict`: the caller re-reads and re-decides. */
const casConflict =
  (key: string) =>
  (error: unknown): never => {
    throw error instanceof JetStreamApiError && error.code === 10071
      ? new RevisionConflict({ message: `job record ${key} changed concurrently`, key })
      : error;
  };
