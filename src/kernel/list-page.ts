import { createHash } from "node:crypto";
import { InvalidArgument } from "./errors.ts";
import type { JobRecord, JobStatus } from "./job-record.ts";
import { decodeRecord } from "./job-record-codec.ts";

/**
 * Listing job records a page at a time (`rt.jobs.list()`, `GET /jobs`):
 * records come in the order they were last written, a page starts after the
 * position the previous one ended at, and the cursor users pass back is that
 * position, encoded.
 */

/** Records per page when none is asked for, and the most one page may hold. */
export const defaultPageLimit = 100;
export const maxPageLimit = 1000;

/**
 * Stored entries one page reads at most: a filter that few records match
 * would otherwise read the whole bucket in one call. A page that reaches
 * the bound ends there, short, with a cursor to go on.
 */
export const scanBound = (limit: number): number => Math.max(1000, 10 * limit);

/** Which records a page keeps: any of these queues and any of these statuses (all when absent). */
export interface RecordFilter {
  readonly queues?: readonly string[];
  readonly statuses?: readonly JobStatus[];
}

const matchesFilter = (record: JobRecord, filter: RecordFilter): boolean =>
  (filter.queues === undefined || filter.queues.includes(record.queue)) &&
  (filter.statuses === undefined || filter.statuses.includes(record.status));

/** A stored record a page left out: its key (the job's id) and why `decodeRecord` refused it. */
export interface UnreadableRecord {
  readonly id: string;
  readonly error: unknown;
}

/**
 * What a page keeps of each stored record it reads, the same on every
 * broker: the record if it decodes and matches `filter`. One that does not
 * decode (a newer version's, a field this version cannot read, not JSON) is
 * added to `unreadable` and skipped, whatever the filter (its queue is not
 * known): it keeps no page, and no cursor, from going past it.
 */
export const recordPicker =
  (filter: RecordFilter, unreadable: UnreadableRecord[]) =>
  (id: string, text: string): JobRecord | undefined => {
    let record: JobRecord;
    try {
      record = decodeRecord(text);
    } catch (error) {
      unreadable.push({ id, error });
      return undefined;
    }
    return matchesFilter(record, filter) ? record : undefined;
  };

/**
 * What a cursor stands for: where the next page starts (a stream sequence on
 * NATS, a revision in memory), and which listing it belongs to: the store
 * its page was read from (`storeTag`) and the filter it kept (`filterTag`).
 * A position means nothing in another listing: given back with another
 * filter it would skip the jobs of that filter stored before it, and in a
 * store made again since (a server back with an empty store numbers its
 * sequences from 1 again) it may lie past the end, or anywhere.
 */
export interface ListCursor {
  readonly position: number;
  /** Absent in a cursor of an earlier version (`v1`), which is taken as a position only. */
  readonly store?: string;
  readonly filter?: string;
  /** The entry stored at the position when it was read (`entryTag`); absent where not known. */
  readonly at?: string;
}

/** A short tag of `text` (8 hex characters of its SHA-256). */
const tagOf = (text: string): string => createHash("sha256").update(text).digest("hex").slice(0, 8);

/** The tag of a store's incarnation (on NATS, its bucket stream's creation time). */
export const storeTag = (incarnation: string): string => tagOf(incarnation);

/** The tag of a stored entry: its key and when it was stored. */
export const entryTag = (key: string, stamp: string): string => tagOf(`${key}\n${stamp}`);

/** The tag of a filter, whatever the order its queues and statuses were given in. */
export const filterTag = (filter: RecordFilter): string =>
  tagOf(
    JSON.stringify([
      filter.queues ? [...filter.queues].sort() : null,
      filter.statuses ? [...filter.statuses].sort() : null,
    ]),
  );

// Versioned, so the position can change meaning later without old cursors being misread. `v1`
// (the position alone) is still read: a walk begun before an upgrade goes on.
const cursorV1 = /^v1:(0|[1-9]\d{0,15})$/;
const cursorV2 = /^v2:(0|[1-9]\d{0,15}):([0-9a-f]{8}):([0-9a-f]{8})(?::([0-9a-f]{8}))?$/;

/** The cursor users get for the position a page ended at, in the store and filter it read. */
export const encodeCursor = (cursor: Required<Omit<ListCursor, "at">> & Pick<ListCursor, "at">): string =>
  Buffer.from(
    `v2:${cursor.position}:${cursor.store}:${cursor.filter}${cursor.at === undefined ? "" : `:${cursor.at}`}`,
  ).toString("base64url");

/** What a cursor stands for; undefined for anything `encodeCursor` did not make. */
export const decodeCursor = (cursor: unknown): ListCursor | undefined => {
  if (typeof cursor !== "string" || cursor.length > 64 || !/^[A-Za-z0-9_-]+$/.test(cursor)) return undefined;
  const text = Buffer.from(cursor, "base64url").toString("latin1");
  const [, seq, store, filter, at] = cursorV2.exec(text) ?? cursorV1.exec(text) ?? [];
  const position = Number(seq);
  if (seq === undefined || !Number.isSafeInteger(position)) return undefined;
  if (store === undefined || filter === undefined) return { position };
  return { position, store, filter, ...(at === undefined ? {} : { at }) };
};

/** What a page read of the store, to check a cursor against (the port's `RecordsPage`). */
export interface PageRead {
  readonly store: string;
  readonly afterEntry?: string;
}

/**
 * Why a cursor does not belong to this listing: made with another filter, in
 * another store than the page read (`store`, that page's `storeTag`), or in
 * this store before it came back behind the cursor's position (a backup
 * restored: the entry stored there now is another, or the store ends before
 * it); undefined when it does, or says none of it (`v1`).
 */
export const cursorMismatch = (
  cursor: ListCursor,
  filter: RecordFilter,
  page: PageRead,
): string | undefined => {
  if (cursor.filter !== undefined && cursor.filter !== filterTag(filter))
    return "made for another queue or status filter: pass it back with the filter of the page that gave it, or list from the first page";
  if (cursor.store !== undefined && cursor.store !== page.store)
    return "made before the job store was made again (the server came back with an empty store): list from the first page";
  const otherThere =
    cursor.at !== undefined && page.afterEntry !== undefined && page.afterEntry !== cursor.at;
  if (cursor.store !== undefined && (page.afterEntry === "behind" || otherThere))
    return "made before the job store came back behind it (its last writes lost, a backup restored): list from the first page";
  return undefined;
};

/** A page asked of a listing: its filter, its size, and where it starts (absent: the first). */
export interface ListingQuery extends RecordFilter {
  readonly limit: number;
  readonly after?: number;
}

/**
 * One page of the listing `query` names after `cursor` (from the start without one), as
 * `rt.jobs.list()` and `GET /jobs` read it: the page, read after the cursor's position; the
 * cursor checked against what that page read (`cursorMismatch`: an `InvalidArgument` naming
 * `cursor`, or the caller's `refuse` of its reason); and the cursor of the page after it
 * (absent: it reached the end).
 */
export const readListing = async <P extends PageAfter>(
  read: (query: ListingQuery) => Promise<P>,
  query: Omit<ListingQuery, "after">,
  cursor: ListCursor | undefined,
  refuse = (why: string): Error => new InvalidArgument({ message: `cursor: ${why}`, field: "cursor" }),
): Promise<{ page: P; next?: string }> => {
  const page = await read(cursor === undefined ? query : { ...query, after: cursor.position });
  const mismatch = cursor && cursorMismatch(cursor, query, page);
  if (mismatch) throw refuse(mismatch);
  const next = cursorAfter(page, query);
  return next === undefined ? { page } : { page, next };
};

/** A page as `cursorAfter` reads it: what it read of the store, and where the next one starts. */
interface PageAfter extends PageRead {
  readonly next?: number;
  readonly nextEntry?: string;
}

/** The cursor of the page after `page` (undefined: it reached the end), for the listing of `filter`. */
const cursorAfter = (page: PageAfter, filter: RecordFilter): string | undefined =>
  page.next === undefined
    ? undefined
    : encodeCursor({
        position: page.next,
        store: page.store,
        filter: filterTag(filter),
        ...(page.nextEntry === undefined ? {} : { at: page.nextEntry }),
      });
