import type { JobRecord } from "../kernel/job-record.ts";
import type { RecordFilter, UnreadableRecord } from "../kernel/list-page.ts";

/** A record as read or written, with its revision: the order of its writes, whatever their clocks say. */
export interface RecordFound {
  readonly record: JobRecord;
  readonly revision: number;
  /**
   * When the server stored this revision, by the server's clock (epoch ms):
   * the times its writer put in it (a submit's `commitDeadline`) are judged
   * from it (`commitDeadlineBy`). Absent where the store keeps no time, or
   * the record was not read from it (a write's own answer).
   */
  readonly storedAt?: number;
}

/**
 * Job records (a KV bucket on NATS): read and written with compare-and-set
 * on the revision, so concurrent writers (a supervisor, the reaper, a
 * cancel) never overwrite each other blindly.
 */
export interface JobRecords {
  createRecord(record: JobRecord): Promise<number>;
  /** The record as stored, with its revision and the server's stamp of that write (`storedAt`). */
  getRecord(id: string): Promise<RecordFound | undefined>;
  /** Throws `RevisionConflict` when the record changed since `revision`. */
  updateRecord(record: JobRecord, revision: number): Promise<number>;
  deleteRecord(id: string, revision: number): Promise<void>;
  listRecords(): Promise<JobRecord[]>;
}

/** Every record as it changes: how a runtime hears of an end written elsewhere. */
export interface RecordWatch {
  /**
   * Calls `onRecord` with every record written from the start of the watch
   * on (no record as it was before; deletes are not records), in the order
   * written, with its revision (as `getRecord` reads it), until `signal`
   * aborts. `onWatching` is called once the watch is in place: every write
   * after that call is delivered. Its `restarted` is true when the store was
   * made again since the watch's last round (a server back with an empty
   * store), or came back behind what the watch read (its last writes lost, a
   * backup restored): revisions start over, or from below, and one read
   * before says nothing of the order of one read after.
   * While a promise `onRecord` returned is pending, nothing more is handed
   * over; meanwhile, and while the watch reconnects, a record written several
   * times may be delivered at its latest revision only (the bucket keeps one
   * revision per key), never skipped. `label` says what the watch is for,
   * where the broker names a resource after it (NATS: its consumers are
   * `<label>_<id>`, default `events`), so an operator can tell them apart.
   */
  watchRecordChanges(
    onRecord: (record: JobRecord, revision: number) => void | Promise<void>,
    signal: AbortSignal,
    onWatching?: (restarted: boolean) => void,
    label?: string,
  ): Promise<void>;
}

/** One page of records: read in the order they were last written, from just after `after`. */
export interface RecordsPageQuery extends RecordFilter {
  /** The position the previous page ended at (its `next`); from the first record when absent. */
  readonly after?: number;
  /** Records at most (≥ 1). */
  readonly limit: number;
  /** Stored entries read at most, matching or not (default `scanBound(limit)`): a call is always bounded. */
  readonly maxScan?: number;
}

export interface RecordsPage {
  readonly records: JobRecord[];
  /**
   * Where the next page starts; absent when this page read up to the end.
   * A page cut by `limit` or `maxScan` has it, and the one after it may be empty.
   */
  readonly next?: number;
  /**
   * The incarnation of the store this page was read from (`storeTag` in
   * kernel/list-page.ts): it changes when the store is made again (a server
   * back with an empty store), and a position from before then means nothing.
   */
  readonly store: string;
  /**
   * The entry stored at `next` (`entryTag` in kernel/list-page.ts: its key and when it was
   * stored); absent where not known (the memory broker, whose store never goes back).
   */
  readonly nextEntry?: string;
  /**
   * The entry stored at the query's `after` as this page found it: its tag, or `behind` when
   * the store now ends before it; absent when nothing is there now (a key written again removes
   * its older entry) or it is not known. Another tag than the cursor's, or `behind`: the store
   * came back behind the page before (a backup restored), and the position means nothing now.
   */
  readonly afterEntry?: string;
  /**
   * The stored records this page read and could not decode (a newer
   * version's, a field this version cannot read), in the order read; absent
   * when there were none. They are not in `records` whatever the filter
   * (their queue and status are not known), count toward `maxScan` but not
   * `limit`, and the page's `next` is past them: one such record keeps no
   * page from being read.
   */
  readonly unreadable?: readonly UnreadableRecord[];
}

/**
 * Records a page at a time, each page costing what it reads, not what is
 * stored. A record rewritten during a walk moves to the end (NATS keeps one
 * message per key, at its last write): it may be listed twice, and a record
 * that existed throughout the walk is listed at least once.
 */
export interface RecordPages {
  listRecordsPage(query: RecordsPageQuery): Promise<RecordsPage>;
}
