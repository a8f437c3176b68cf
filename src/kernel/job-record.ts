/**
 * The job record kept in KV (key = job id). It is the one source of truth a
 * restarted runtime, another process or the HTTP API reads; it carries a
 * version number so a later jetstate can read what an older one wrote.
 */

export const JobStatus = {
  queuing: "queuing",
  running: "running",
  stalled: "stalled",
  succeeded: "succeeded",
  failed: "failed",
} as const;
export type JobStatus = (typeof JobStatus)[keyof typeof JobStatus];

export const isFinal = (status: JobStatus): boolean =>
  status === JobStatus.succeeded || status === JobStatus.failed;

/** How a cancel is recorded: `cancelJob` and the job machine's `job.cancel` both write this prefix. */
const cancelledPrefix = "cancelled: ";

/** A job that ended by a cancel (`failed`, its reason "cancelled: …"). */
export const isCancelled = (record: { readonly status: JobStatus; readonly reason?: string }): boolean =>
  record.status === JobStatus.failed && record.reason?.startsWith(cancelledPrefix) === true;

/** Where a status stands in a job's life: a record write never moves a job to a lower rank. */
const rank: Record<JobStatus, number> = { queuing: 0, running: 1, stalled: 1, succeeded: 2, failed: 2 };

/** True when `next` would move the job backwards (running → queuing, an end → running). */
export const movesBackwards = (stored: JobStatus, next: JobStatus): boolean => rank[next] < rank[stored];

/**
 * Per field the larger: counts written to a record never decrease (only a redrive lowers `dead`,
 * and a redriven job's supervisor: `supervisedCounts`).
 */
export const maxCounts = (a: JobCounts, b: JobCounts): JobCounts => ({
  done: Math.max(a.done, b.done),
  failed: Math.max(a.failed, b.failed),
  dead: Math.max(a.dead, b.dead),
});

/**
 * The counts its supervisor writes onto a record (its progress, its end): per field the
 * larger, but a redriven job's `dead` is the supervisor's own count. A write planned before
 * the redrive's marker was counted here lands after the redrive lowered `dead` (its feed
 * behind the redrive's write): the larger kept the dead task for good, the job ending with
 * it counted dead and run again; the write that follows, from the marker counted, takes it off.
 */
export const supervisedCounts = (record: JobRecord, counted: JobCounts): JobCounts => {
  const larger = maxCounts(record.counts, counted);
  return record.redrive === undefined ? larger : { ...larger, dead: counted.dead };
};

/**
 * The redrive that reopened a record its supervisor has not counted the marker of
 * (`counted`: the redrives whose markers it counted); undefined when there is none, or
 * the record is over. An end decided before that marker was counted is not the job's:
 * the redriven task runs again, and written, the end said it dead with no dead letter left.
 */
export const uncountedRedrive = (
  record: JobRecord,
  counted: ((redrive: string) => boolean) | undefined,
): string | undefined =>
  counted && !isFinal(record.status) && record.redrive !== undefined && !counted(record.redrive)
    ? record.redrive
    : undefined;

/**
 * Where a submit is: `submitting` (tasks being published, invisible to
 * workers; a lane job's tasks reach them as they are published: one task's
 * publish commits its job, whose record says `submitting` until its next
 * write, `asCommittedLane`; a worker holds the tasks of a larger one,
 * unrun, until its commit), `committed` (the consumer exists, or the lane
 * job's commit is written: workers may run tasks) or `rolledBack` (the
 * reaper or the submitter undid it).
 */
export const SubmitPhase = {
  submitting: "submitting",
  committed: "committed",
  rolledBack: "rolledBack",
} as const;
export type SubmitPhase = (typeof SubmitPhase)[keyof typeof SubmitPhase];

export interface JobSettings {
  /** Share of tasks (0..1) that may fail or die while the job still succeeds. */
  readonly maxFailures: number;
  readonly ackWaitMs: number;
  readonly maxDeliver: number;
  /** Nak delay per attempt (the last one repeats). */
  readonly backoffMs: readonly number[];
  /** No progress for this long while tasks remain → `stalled`. */
  readonly stallAfterMs: number;
  /** Stalled for this long → `failed` (0: never). */
  readonly stalledTimeoutMs: number;
  /**
   * Workers take higher-priority tasks first (`kernel/slots.ts`), an integer
   * in [−100, 100]. Absent: 0, as in every record written before priorities.
   */
  readonly priority?: number;
}

export interface JobCounts {
  readonly done: number;
  readonly failed: number;
  readonly dead: number;
}

/** A job's end as its supervisor writes it: what the job machine hands to finalize. */
export interface FinalizeInput {
  readonly jobId: string;
  readonly queue: string;
  readonly status: typeof JobStatus.succeeded | typeof JobStatus.failed;
  readonly reason: string | null;
  readonly counts: JobCounts;
}

/** @public Exported for the published declarations: `JobRecord` names it. */
export interface JobRecordV1 {
  readonly v: 1;
  readonly id: string;
  readonly queue: string;
  readonly status: JobStatus;
  readonly phase: SubmitPhase;
  readonly total: number;
  /**
   * Unique per submit attempt. Task message ids are `<jobId>.<submitId>.<n>`:
   * a retried publish within the attempt dedupes, while a resubmit after a
   * rollback is not swallowed by the server's duplicate window.
   */
  readonly submitId: string;
  readonly idempotencyKey?: string;
  /**
   * What the submit asked for (tasks and settings), as `<version>:<digest>`:
   * a second submit with the same idempotency key must ask for the same.
   * Absent in records written before it existed; those match any request.
   */
  readonly requestDigest?: string;
  readonly settings: JobSettings;
  readonly counts: JobCounts;
  readonly createdAt: number;
  readonly updatedAt: number;
  /**
   * A submit not committed by then is rolled back by the reaper: by its
   * submitter's clock, as `updatedAt`; another runtime judges it by the
   * server's (`commitDeadlineBy`).
   */
  readonly commitDeadline: number;
  readonly finishedAt?: number;
  readonly reason?: string;
  /**
   * The job's tasks are on its queue's lane (one consumer serves every such
   * job; a job of one task is committed by its task's publish, a larger one
   * by its record's commit write) instead of a consumer of its own. Absent:
   * a consumer of its own, as every job before the lane.
   */
  readonly lane?: true;
  /**
   * A delayed job (`delayMs`, `runAt` or `taskRunAt`): when its first held
   * task is due (ms since epoch). Absent: every task was visible at its commit.
   */
  readonly runAt?: number;
  /** When its last held task is due: the stall clock does not run before it (kernel/held-task.ts). */
  readonly dueUntil?: number;
  /**
   * The id of the last redrive that reopened the job (derived from the dead
   * letters it sent back): the same redrive made again lowers `dead` once.
   */
  readonly redrive?: string;
  /**
   * The id of a redrive whose copies were not sent and whose deaths were
   * stored again (`keepDead`): a call of the same id (the same letters) does
   * not reopen the job with it after. Cleared by the next redrive accepted.
   */
  readonly redriveFailed?: string;
  /**
   * The lease holder of the runtime that last took the job over, written by
   * its first act as supervisor: a supervisor named otherwise writes nothing
   * more of the job. Absent: never taken over (its submitter supervises).
   */
  readonly supervisor?: string;
}

export type JobRecord = JobRecordV1;

/**
 * When a submit's commit deadline passes by a reader's clock that is
 * `aheadMs` ahead of the server's (negative: behind): the window its
 * submitter gave it (`commitDeadline` less `updatedAt`, both stamped by the
 * submitter's clock, so their difference is right whatever that clock says)
 * counted from the server's stamp of the record's write (`storedAt`), moved
 * to the reader's clock. Neither the submitter's clock nor the reader's is
 * trusted: by the deadline as written, a submitter ahead that died left it
 * minutes on, and a reaper ahead rolled back a live submit. Never before the
 * submitter's own check of its deadline (its stamp is no later than the
 * write). Without a stamp, or with no reading of the server's clock
 * (`aheadMs` undefined), `commitDeadline` as written: the stamp taken for
 * the reader's time rolled back a live submit whenever the reader's clock
 * was ahead of the server's (a whole fleet ahead of it, the submitter's
 * host included), and left a dead one for as long as it was behind; as
 * written, runtimes sharing a clock (one host) agree, as before the stamps.
 */
export const commitDeadlineBy = (
  found: { readonly record: JobRecord; readonly storedAt?: number | undefined },
  aheadMs: number | undefined,
): number => {
  const { record, storedAt } = found;
  if (storedAt === undefined || aheadMs === undefined) return record.commitDeadline;
  return storedAt + aheadMs + (record.commitDeadline - record.updatedAt);
};

/** Where a job's tasks are: its queue, its id, whether it is on the queue's lane, and whether some are held (`runAt`). */
export type JobTasksRef = Pick<JobRecord, "queue" | "id" | "lane" | "runAt">;

/** A job's tasks as one submit of it published them (a lane job's name their submit). */
export type SubmitTasksRef = JobTasksRef & Pick<JobRecord, "submitId">;

/**
 * A lane job's record as committed once its submit is known to have
 * committed: its task's publish (the commit point) was acknowledged, or its
 * task or a result of it was read stored. Its commit is not written then
 * (one record write less per small job): the record says `submitting` until
 * the job's next write, which writes the commit with it. Any other record,
 * another submit's of the key included, is as stored.
 */
export const asCommittedLane = (record: JobRecord, laneSubmit: string | undefined): JobRecord =>
  laneSubmit !== undefined &&
  commitsOnPublish(record) &&
  record.phase === SubmitPhase.submitting &&
  record.submitId === laneSubmit
    ? { ...record, phase: SubmitPhase.committed, status: "running" }
    : record;

/**
 * How often a task's lease is extended while it is held (running, waiting
 * for a slot or at the gate, its result being stored): three times per ack
 * wait, and never more often than every 10 ms.
 */
export const leaseKeepEveryMs = (ackWaitMs: number): number => Math.max(10, ackWaitMs / 3);

/** The lane consumer's ack wait and delivery limit: one for every lane job (the defaults of a job's). */
export const laneAckWaitMs = 30_000;
export const laneMaxDeliver = 5;

/** How many tasks a lane job may have at most, unless `jobs.laneMaxTasks` says otherwise. */
export const laneMaxTasksDefault = 100;

/**
 * The most `jobs.laneMaxTasks` may say: a lane job's tasks are removed one
 * message at a time (a filtered purge would make the lane skip other jobs'
 * tasks on nats-server 2.9), and the lane serves its jobs in order.
 */
export const laneMaxTasksLimit = 1000;

/**
 * Whether a job of these tasks and settings goes on its queue's lane: at
 * most `maxTasks` tasks, and the lane's ack wait and delivery limit. The
 * server enforces the limit (its count of deliveries is kept across naks;
 * the count a delivery reports is not always, on nats-server 2.9), and its
 * MAX_DELIVERIES advisory dead-letters the task as it does a job consumer's.
 */
export const fitsLane = (total: number, settings: JobSettings, maxTasks = laneMaxTasksDefault): boolean =>
  total <= maxTasks &&
  settings.ackWaitMs === laneAckWaitMs &&
  settings.maxDeliver === laneMaxDeliver &&
  priorityOf(settings) === 0;

/**
 * A lane job of one task: the publish of its task is its commit point (one
 * message is stored whole or not at all), and its record says `submitting`
 * until its next write. A lane job of more tasks commits as a job with a
 * consumer of its own does, by its record's write once every task is
 * stored: its first tasks may reach a worker before, which holds them until
 * it hears the commit (`awaitsLaneCommit`).
 */
export const commitsOnPublish = (record: Pick<JobRecord, "lane" | "total">): boolean =>
  record.lane === true && record.total === 1;

/**
 * A lane task published by another submit of its job's key than the
 * record's: one rolled back (a committed submit is never followed by
 * another), whose removal had not reached the task yet. It never runs, nor
 * is it dead-lettered: the next submit publishes the same tasks again. A
 * task that names no submit (published before tasks named theirs, or a
 * redrive's copy), or whose job has no record, is the record's. Whatever
 * the record's own lane: the next submit of the key may have a consumer of
 * its own (another runtime's `jobs.lane`, or a submit's `lane: false`, is
 * the same request), and a worker that follows it took the rolled-back
 * submit's lane tasks for its own.
 */
export const ofOtherSubmit = (record: JobRecord | undefined, submit: string | undefined): boolean =>
  submit !== undefined && record !== undefined && submit !== record.submitId;

/** Whether `r`, a job's record as stored now, still holds the submit of `read`, not rolled back since. */
export const holdsSubmit = (r: JobRecord, read: JobRecord): boolean =>
  r.submitId === read.submitId && r.phase !== SubmitPhase.rolledBack;

/**
 * The submit an answer of `task` names (`withAnswerSubmit` in `kernel/wire.ts`): the one that
 * published it, on a 1-task lane job, whose task is its commit point; undefined on any other.
 */
export const answerSubmit = (
  record: JobRecord | undefined,
  task: { readonly submit?: string | undefined },
): string | undefined => (record !== undefined && commitsOnPublish(record) ? task.submit : undefined);

/**
 * Whether `record` was made by another submit of its job's key than
 * `submitId`'s: the job's record went with the server's store (it came back
 * empty) and its key was submitted again. That is a new job under the same
 * id: the lost job's runtime writes nothing onto its record and cleans
 * nothing of it up, and the lost job's actor ends (`madeAgainReason`).
 */
export const madeAgain = (record: Pick<JobRecord, "submitId">, submitId: string): boolean =>
  record.submitId !== submitId;

/** How a job whose record another submit made again (`madeAgain`) ended: never written, its handles say it. */
export const madeAgainReason = (record: Pick<JobRecord, "submitId">): string =>
  `tasks lost: the server's store was reset and the job's key was submitted again (submit ${record.submitId})`;

/**
 * A lane job of more than one task whose submit has not written its commit
 * yet: a worker that gets one of its tasks holds it, unrun, until the
 * record says committed (it runs) or rolled back (it is removed).
 */
export const awaitsLaneCommit = (record: JobRecord): boolean =>
  record.lane === true &&
  !commitsOnPublish(record) &&
  record.phase === SubmitPhase.submitting &&
  !isFinal(record.status);

/**
 * A lane job whose task has its answer stored, done or failed (not dead: an
 * exhausted task stays on the stream): its end need not look for the task.
 * A worker acks a task once its answer is stored; one whose ack is lost is
 * delivered again by the lane consumer, which stays, and termed unrun, its
 * job being over. (A job's own consumer is deleted at its end: an ack in
 * flight then is lost for good, so such a job's tasks are always purged.)
 */
export const laneTaskAnswered = (record: JobRecord): boolean =>
  record.lane === true && record.counts.done + record.counts.failed === record.total;

/**
 * A job's priority (0 when the record has none). A job of another priority
 * never goes on the lane: the lane is one FIFO, and a priority-10 job there
 * would wait behind every lane task stored before it. With a consumer of its
 * own it waits for a worker's slot only, and the slot order puts it first.
 */
export const priorityOf = (settings: JobSettings): number => settings.priority ?? 0;

/** Committed and not over: a job workers follow and HTTP workers reserve from. */
export const isRunning = (record: JobRecord): boolean =>
  record.phase === SubmitPhase.committed &&
  (record.status === JobStatus.running || record.status === JobStatus.stalled);

/**
 * A job whose tasks a worker may run: one that runs, or a lane job of one
 * task whose submit has not marked it committed yet (its task's publish was
 * its commit point). Native workers and the HTTP API's lane reserve decide by it.
 */
export const takesTasks = (record: JobRecord): boolean =>
  isRunning(record) ||
  (commitsOnPublish(record) && record.phase === SubmitPhase.submitting && !isFinal(record.status));

export const answered = (counts: JobCounts): number => counts.done + counts.failed + counts.dead;

/** Tasks a job over left never answered (its record's counts); 0 for a job not over. */
export const neverAnswered = (record: JobRecord): number =>
  isFinal(record.status) ? Math.max(0, record.total - answered(record.counts)) : 0;

/** Succeeded iff every task is answered and failures stay within the tolerance. */
export const withinTolerance = (counts: JobCounts, total: number, maxFailures: number): boolean =>
  counts.failed + counts.dead <= Math.floor(maxFailures * total + 1e-9);
