import {
  answered,
  isCancelled,
  isFinal,
  type JobCounts,
  type JobRecord,
  type JobStatus,
  SubmitPhase,
} from "./job-record.ts";

/**
 * What happened to a job, read from the revisions of its record
 * (`rt.jobs.events()`):
 * - `created`: the submit committed (workers may see its tasks);
 * - `progress`: its counts changed while it runs (written at most once a second),
 *   or it runs again after a stall;
 * - `stalled`: no answer for `stallAfterMs`;
 * - `reopened`: it runs again after an end (a redrive);
 * - `succeeded`, `failed`, `cancelled`: its end (a cancel is recorded as
 *   `failed` with the reason `cancelled: …`).
 */
export type JobEventType =
  | "created"
  | "progress"
  | "stalled"
  | "reopened"
  | "succeeded"
  | "failed"
  | "cancelled";

export interface JobEvent {
  readonly type: JobEventType;
  readonly jobId: string;
  readonly queue: string;
  /** The job's status as recorded (`failed` for `cancelled`, `running` for `created`). */
  readonly status: JobStatus;
  readonly total: number;
  readonly counts: JobCounts;
  /** Why it failed or was cancelled. */
  readonly reason?: string;
  /**
   * When it happened, by the writer's clock (ms since epoch): the submit
   * (`createdAt`) for `created`, the end for an end, the record's write otherwise.
   */
  readonly at: number;
}

/** What a reader remembers of one job: enough to tell a change from a repeat. */
interface Seen {
  /** The submit the job is of: a record of another submit under its id is another job. */
  readonly submitId: string;
  readonly phase: SubmitPhase;
  readonly status: JobStatus;
  readonly counts: JobCounts;
  /** The end delivered last, while the job is over: a record written again with it is no news. */
  readonly end?: string;
}

const zero: JobCounts = { done: 0, failed: 0, dead: 0 };

const sameCounts = (a: JobCounts, b: JobCounts): boolean =>
  a.done === b.done && a.failed === b.failed && a.dead === b.dead;

/** An end is written once with its time: the same status, time and reason is the same end. */
const endOf = (record: JobRecord): string =>
  JSON.stringify([record.status, record.finishedAt ?? null, record.reason ?? null]);

const endType = (record: JobRecord): JobEventType =>
  record.status === "succeeded" ? "succeeded" : isCancelled(record) ? "cancelled" : "failed";

/**
 * The commit's own write: running, nothing answered, no end, written by its
 * deadline (a submitter does not commit after it). A reader that missed the
 * `submitting` revision (a history-1 bucket keeps only a key's latest)
 * still knows the job was created after it started watching. Later writes
 * that look the same (the redrive of a job every task of which died, a
 * consumer restore's touch of a job nobody answered yet) read as `created`
 * before the deadline was asked.
 */
const looksCommitted = (record: JobRecord): boolean =>
  record.status === "running" &&
  answered(record.counts) === 0 &&
  record.finishedAt === undefined &&
  record.updatedAt <= record.commitDeadline;

/**
 * The commit's write, which names no supervisor (its submitter's). One that
 * names one is a taker's write of the record as it read it (`takeRecord`,
 * its `updatedAt` kept): the job was created before, and nothing changed.
 */
const isCommitWrite = (record: JobRecord): boolean =>
  looksCommitted(record) && record.supervisor === undefined;
const isTakeOfCommit = (record: JobRecord): boolean =>
  looksCommitted(record) && record.supervisor !== undefined;

/**
 * Turns the revisions of job records, in the order written, into job events.
 * It remembers the last state of at most `capacity` jobs (the least recently
 * changed are forgotten first), so an end written again is delivered once
 * while its job is remembered, in bounded memory. Pure: no I/O, no clock.
 */
export class JobEventTranslator {
  readonly #capacity: number;
  readonly #seen = new Map<string, Seen>();

  constructor(capacity = 10_000) {
    this.#capacity = Math.max(1, capacity);
  }

  /** Jobs remembered now (at most the capacity). */
  get remembered(): number {
    return this.#seen.size;
  }

  /** Whether the job is remembered. */
  remembers(jobId: string): boolean {
    return this.#seen.has(jobId);
  }

  /** The events one revision of a record means, given the revisions translated before it. */
  translate(record: JobRecord): JobEvent[] {
    const known = this.#seen.get(record.id);
    // The key's job made again under its id (by a resubmit once the store came back empty, or
    // once cleanup removed the job): a new job, not news of the one remembered. Read as news, it
    // was told `reopened` (the one remembered had ended) with no `created`, or told nothing.
    const prev = known?.submitId === record.submitId ? known : undefined;
    if (record.phase === SubmitPhase.rolledBack) {
      // A submit undone never was a job: nothing to tell, nothing to remember.
      this.#seen.delete(record.id);
      return [];
    }
    const events: JobEvent[] = [];
    const event = (type: JobEventType, fields: Partial<JobEvent> = {}): JobEvent => ({
      type,
      jobId: record.id,
      queue: record.queue,
      status: record.status,
      total: record.total,
      counts: record.counts,
      ...(record.reason !== undefined ? { reason: record.reason } : {}),
      at: record.updatedAt,
      ...fields,
    });
    // First seen at a take of the commit's record: nothing to tell (no answer, no change).
    if (record.phase === SubmitPhase.committed && !(prev === undefined && isTakeOfCommit(record))) {
      const created = prev?.phase === SubmitPhase.submitting || (prev === undefined && isCommitWrite(record));
      if (created) {
        const { reason: _reason, ...born } = event("created", {
          status: "running",
          counts: zero,
          at: record.createdAt,
        });
        events.push(born);
      }
      // After `created`, what this revision says beyond the commit (a reader that fell behind
      // sees a later revision only).
      const before: Seen | undefined = created
        ? { submitId: record.submitId, phase: SubmitPhase.committed, status: "running", counts: zero }
        : prev;
      events.push(...this.#changes(before, record, event));
    }
    this.#remember(record);
    return events;
  }

  #changes(
    before: Seen | undefined,
    record: JobRecord,
    event: (type: JobEventType, fields?: Partial<JobEvent>) => JobEvent,
  ): JobEvent[] {
    if (isFinal(record.status)) {
      // Written again with the same end (or read again): delivered once.
      if (before?.end === endOf(record)) return [];
      return [event(endType(record), { at: record.finishedAt ?? record.updatedAt })];
    }
    if (before?.end !== undefined) return [event("reopened")];
    if (record.status === "stalled") return before?.status === "stalled" ? [] : [event("stalled")];
    // A record is written only when something changed: one first seen is news too.
    const news =
      before === undefined || !sameCounts(before.counts, record.counts) || before.status === "stalled";
    return news ? [event("progress")] : [];
  }

  #remember(record: JobRecord): void {
    this.#seen.delete(record.id);
    if (record.phase === SubmitPhase.rolledBack) return;
    this.#seen.set(record.id, {
      submitId: record.submitId,
      phase: record.phase,
      status: record.status,
      counts: record.counts,
      ...(isFinal(record.status) && record.phase === SubmitPhase.committed ? { end: endOf(record) } : {}),
    });
    // Least recently changed first: Map keeps insertion order, and a change re-inserts.
    for (const oldest of this.#seen.keys()) {
      if (this.#seen.size <= this.#capacity) break;
      this.#seen.delete(oldest);
    }
  }
}
