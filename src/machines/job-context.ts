import { stallClockFrom } from "../kernel/held-task.ts";
import type { JobProgress } from "../kernel/job-progress.ts";
import { noDeadBits } from "../kernel/job-progress.ts";
import type { JobCounts, JobSettings, JobStatus } from "../kernel/job-record.ts";

/**
 * A job machine's context, and how its input starts it: a new submit, or a
 * job resumed from its record (running, stalled, or over).
 */

/**
 * The progress fields (counts, bitmaps, rate, ETA: see kernel/job-progress.ts) and the job's own.
 * Exported for the machine (job.machine.ts), and so for the published declarations (its type names it).
 * @public
 */
export interface JobContext extends JobProgress {
  readonly jobId: string;
  readonly queue: string;
  readonly settings: JobSettings;
  readonly startedAt: number;
  readonly stalledSince: number | null;
  readonly reason: string | null;
  /** Status of the record when this actor took over supervision (null: it submits). */
  readonly resumeFrom: JobStatus | null;
  /**
   * The counts last read from the job record (another runtime may be its
   * supervisor): what is shown until the replayed results catch up, so a job
   * looked at from another runtime never reads lower than its record.
   * Decisions use the counted answers only.
   */
  readonly recorded: JobCounts;
  /**
   * When the job's last held (delayed) task is due; null: none held. The
   * stall clock does not run before it (kernel/held-task.ts `stallClockFrom`).
   */
  readonly dueUntil: number | null;
  /** When its first held (delayed) task is due; null: none held (the record's `runAt`). */
  readonly runAt: number | null;
  /**
   * How far the wall clock read ahead of the job's clock at `now`. The job's
   * times (`now`, `lastProgressAt`, `stalledSince`, ...) are on the runtime's
   * steady clock, which a step of the wall clock does not move; the record's
   * (`dueUntil`, `runAt`) are wall-clock times: `dueUntil - wallAhead` on it.
   */
  readonly wallAhead: number;
}

export interface JobInput {
  readonly jobId: string;
  readonly queue: string;
  readonly total: number;
  readonly settings: JobSettings;
  readonly now: number;
  /** Status found in the job record when supervision starts (undefined: a new submit). */
  readonly resumeFrom?: JobStatus;
  /** Counts in the record: a finished job's counts, an active one's until its replay catches up. */
  readonly counts?: JobCounts;
  readonly reason?: string;
  /** When its last held (delayed) task is due (the record's `dueUntil`). */
  readonly dueUntil?: number;
  /** When its first held (delayed) task is due (the record's `runAt`). */
  readonly runAt?: number;
  /** When a job resumed `stalled` stalled (its record's `updatedAt`): its stalled timeout counts from then. */
  readonly stalledSince?: number;
  /** How far the wall clock reads ahead of `now` (0: they agree). */
  readonly wallAhead?: number;
}

/**
 * When the stall clock starts (kernel/held-task.ts `stallClockFrom`) at `now`, the wall clock
 * `wallAhead` of it: a held task is due by the wall clock (its record's `dueUntil`).
 */
export const stallStart = (context: JobContext, now: number, wallAhead: number): number =>
  stallClockFrom(
    context.lastProgressAt,
    context.dueUntil === null ? undefined : context.dueUntil - wallAhead,
    now,
  );

/** The context a job's actor starts with. */
export const jobContext = (input: JobInput): JobContext => {
  const counts = finishedCounts(input);
  // A job resumed stalled: since its record's stall, its last progress a stallAfterMs before.
  // Never after now: a stall stamped by a host whose clock is ahead held the job that much longer.
  const stalledSince =
    input.resumeFrom === "stalled" ? Math.min(input.stalledSince ?? input.now, input.now) : null;
  const context: JobContext = {
    jobId: input.jobId,
    queue: input.queue,
    total: input.total,
    settings: input.settings,
    done: counts.done,
    failed: counts.failed,
    dead: counts.dead,
    answered: new Uint8Array(Math.ceil(input.total / 8)),
    deadBits: noDeadBits,
    startedAt: input.now,
    lastProgressAt: stalledSince === null ? input.now : stalledSince - input.settings.stallAfterMs,
    stalledSince,
    throughput: 0,
    throughputAt: null,
    rateTasks: 0,
    rateMs: 0,
    etaMs: null,
    resumeFrom: input.resumeFrom ?? null,
    recorded: input.counts ?? { done: 0, failed: 0, dead: 0 },
    reason: input.reason ?? null,
    dueUntil: input.dueUntil ?? null,
    runAt: input.runAt ?? null,
    now: input.now,
    wallAhead: input.wallAhead ?? 0,
  };
  // A copy, not the literal: every `assign` copies the context (`Object.assign({}, context,
  // update)`), and V8 makes that copy of a literal this large a dictionary, ~1.6 KB of heap on
  // every live job and slower to copy again; a spread copy's copies keep fast properties.
  return { ...context };
};

const finishedCounts = (input: JobInput): JobCounts =>
  input.counts && (input.resumeFrom === "succeeded" || input.resumeFrom === "failed")
    ? input.counts
    : { done: 0, failed: 0, dead: 0 };
