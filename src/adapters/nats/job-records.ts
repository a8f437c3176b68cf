import { JetStreamApiError, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { RevisionConflict } from "../../kernel/errors.ts";
import type { JobRecord } from "../../kernel/job-record.ts";
import { decodeRecord, encodeRecord } from "../../kernel/job-record-codec.ts";
import {
  entryTag,
  recordPicker,
  scanBound,
  storeTag,
  type UnreadableRecord,
} from "../../kernel/list-page.ts";
import type { RecordFound, RecordsPage, RecordsPageQuery } from "../job-records.ts";
import { pageBucket, scanBucket, scanBucketEntries } from "./bucket-reads.ts";
import type { NatsContext } from "./nats-context.ts";
import { eraseEntryAt } from "./streams.ts";

/** A delete marker in the jobs bucket: the key's one message, at `revision`. */
export interface RecordMarker {
  readonly id: string;
  readonly revision: number;
}

/** Delete markers removed per operation (two requests each). */
const markersPerRun = 200;

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
  /** Whether the bucket keeps one message a key (`#onePerKey`). */
  #historyOne: Promise<boolean> | undefined;

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

  /** The record, its revision and the server's stamp of its message (`storedAt`). */
  getRecord(id: string): Promise<RecordFound | undefined> {
    return this.#run("job.record.get", async ({ kv }) => {
      const entry = await kv.get(id);
      if (entry?.operation !== "PUT") return undefined;
      return {
        record: decodeRecord(entry.string()),
        revision: entry.revision,
        storedAt: entry.created.getTime(),
      };
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
   * Deletes the record at `revision` (compare-and-set): its message is
   * erased by sequence, after a read that finds this key's record there (a
   * record written since has replaced it: the conflict). No KV delete: its
   * marker stayed the key's one message for good, one per job ever cleaned
   * up, which every page of `list()`, every scan and every start of the
   * server reads. Erased, not only deleted: on nats-server 2.9 a delete
   * without erasure is forgotten by a server killed before it flushes, and
   * removing a marker right after its KV delete brought the record behind it
   * back after such a kill (the limit's removal of the record, in an older
   * block, was not flushed either). The read also keeps the delete on this
   * key (a server back with an empty store starts its sequences over) and
   * within the stream (a clustered 2.9.10 resets its stream group on a delete
   * past the end). A bucket that keeps more than one message a key (made so
   * outside jetstate) gets the KV delete: erasing would bring back the
   * revision before.
   */
  deleteRecord(id: string, revision: number): Promise<void> {
    return this.#run("job.record.delete", async ({ kv, jsm }) => {
      if (!(await this.#onePerKey(jsm))) {
        await kv.delete(id, { previousSeq: revision }).catch(casConflict(id));
        return;
      }
      if (!(await eraseEntryAt(jsm, this.#bucket, id, revision, "value")))
        throw new RevisionConflict({ message: `job record ${id} changed concurrently`, key: id });
    });
  }

  /** Whether the bucket keeps one message a key (asked once; again after a failed ask). */
  #onePerKey(jsm: JetStreamManager): Promise<boolean> {
    if (!this.#historyOne) {
      const asked = jsm.streams
        .info(`KV_${this.#bucket}`)
        .then((info) => info.config.max_msgs_per_subject === 1);
      asked.catch(() => {
        if (this.#historyOne === asked) this.#historyOne = undefined;
      });
      this.#historyOne = asked;
    }
    return this.#historyOne;
  }

  listRecords(): Promise<JobRecord[]> {
    return this.#run("job.record.list", async ({ js, jsm }) =>
      [...(await scanBucket(js, jsm, this.#bucket)).values()].map(decodeRecord),
    );
  }

  /**
   * Every record with its revision, and the delete markers the bucket holds
   * (versions before this one left them), in one pass (`scanBucketEntries`).
   */
  listRecordsAndMarkers(): Promise<{
    records: JobRecord[];
    revisions: ReadonlyMap<string, number>;
    markers: RecordMarker[];
  }> {
    return this.#run("job.record.list", async ({ js, jsm }) => {
      const records: JobRecord[] = [];
      const revisions = new Map<string, number>();
      const markers: RecordMarker[] = [];
      for (const [id, { value, revision }] of await scanBucketEntries(js, jsm, this.#bucket)) {
        if (value === undefined) markers.push({ id, revision });
        else {
          records.push(decodeRecord(value));
          revisions.set(id, revision);
        }
      }
      return { records, revisions, markers };
    });
  }

  /**
   * Erases the delete markers older versions left (their cleanup was a KV
   * delete), by sequence (one rewritten since stays), in runs of
   * `markersPerRun` (each its own deadline: a backlog goes over passes that
   * each get somewhere); how many went. Only in a bucket that keeps one
   * message a key: with more, the message behind a marker would be the key's
   * value again.
   */
  async removeMarkers(markers: readonly RecordMarker[]): Promise<number> {
    if (markers.length === 0) return 0;
    if (!(await this.#run("job.record.history", ({ jsm }) => this.#onePerKey(jsm)))) return 0;
    let removed = 0;
    for (let from = 0; from < markers.length; from += markersPerRun) {
      const run = markers.slice(from, from + markersPerRun);
      removed += await this.#run("job.record.markers", async ({ jsm }) => {
        let gone = 0;
        for (const { id, revision } of run)
          if (await eraseEntryAt(jsm, this.#bucket, id, revision, "marker")) gone++;
        return gone;
      });
    }
    return removed;
  }

  /** One page of records, in the order of their last write (`pageBucket`). */
  listRecordsPage(query: RecordsPageQuery): Promise<RecordsPage> {
    return this.#run("job.record.page", async ({ jsm }, nc) => {
      // Filled afresh by each try of the operation (a retry reads the page again).
      const unreadable: UnreadableRecord[] = [];
      // The bucket's incarnation, read beside the page: a position means nothing in a store made
      // again (its sequences start over), which its creation time tells.
      const [{ items, next, nextStored, afterStored }, info] = await Promise.all([
        pageBucket(nc, jsm, this.#bucket, {
          after: query.after ?? 0,
          limit: query.limit,
          maxScan: query.maxScan ?? scanBound(query.limit),
          pick: recordPicker(query, unreadable),
        }),
        jsm.streams.info(`KV_${this.#bucket}`),
      ]);
      const after = query.after ?? 0;
      return {
        records: items,
        store: storeTag(info.created),
        ...(next === undefined ? {} : { next }),
        ...(nextStored === undefined ? {} : { nextEntry: entryTag(nextStored.key, nextStored.stamp) }),
        // A store whose end is before the entry the page starts after came back behind it.
        ...(after > info.state.last_seq
          ? { afterEntry: "behind" as const }
          : afterStored === undefined
            ? {}
            : { afterEntry: entryTag(afterStored.key, afterStored.stamp) }),
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
