import { decodeRecord, type JobRecord, type JobStatus } from "./job-record.ts";

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

// Versioned, so the position can change meaning later without old cursors being misread.
const cursorPattern = /^v1:(0|[1-9]\d{0,15})$/;

/** The cursor users get for a position (a stream sequence on NATS, a revision in memory). */
export const encodeCursor = (position: number): string => Buffer.from(`v1:${position}`).toString("base64url");

/** The position a cursor stands for; undefined for anything `encodeCursor` did not make. */
export const decodeCursor = (cursor: unknown): number | undefined => {
  if (typeof cursor !== "string" || cursor.length > 64 || !/^[A-Za-z0-9_-]+$/.test(cursor)) return undefined;
  const match = cursorPattern.exec(Buffer.from(cursor, "base64url").toString("latin1"));
  const position = Number(match?.[1]);
  return match && Number.isSafeInteger(position) ? position : undefined;
};
