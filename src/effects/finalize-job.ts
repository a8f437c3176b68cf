import { Effect } from "effect";
import type { JobPort } from "../adapters/job-port.ts";
import type { JobRecords, RecordFound } from "../adapters/job-records.ts";
import { isTransient } from "../kernel/errors.ts";
import {
  answered,
  asCommittedLane,
  commitsOnPublish,
  type FinalizeInput,
  isFinal,
  type JobCounts,
  type JobRecord,
  type JobTasksRef,
  laneTaskAnswered,
  madeAgain,
  maxCounts,
  SubmitPhase,
  supervisedCounts,
  uncountedRedrive,
} from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import { boundReason } from "../kernel/reason.ts";
import { fromPort, isConflict, type PortFailure } from "./port-call.ts";
import { type RecordSeen, updateRecordWith, updateRecordWithEffect, wrote } from "./record-updates.ts";
import { plainThenUntilDone } from "./retry.ts";

/**
 * Cancels a job from any runtime: a compare-and-set of the record to
 * `failed` / "cancelled: <reason>", keeping its counts, then its tasks are
 * purged and its consumer deleted. Workers stop handing out its tasks once
 * they see the record; its supervisor, wherever it runs, sees the end in its
 * record watch and stops. Resolves with the stored record (an end already
 * recorded is left as it is, and so is a record another submit of the key
 * made again when `submit` names the job's) and its revision. A clean-up
 * that fails once the end is recorded is said to `tasksLeft`, and the
 * cancel stands.
 */
const cancelJobEffect = (
  port: JobPort,
  id: string,
  reason: string,
  counts: JobCounts,
  now: number,
  submit: string | undefined,
  tasksLeft: (error: unknown) => void,
): Effect.Effect<RecordFound | undefined, PortFailure> =>
  Effect.gen(function* () {
    const change = (record: JobRecord): JobRecord | undefined => {
      if (isFinal(record.status) || record.phase !== SubmitPhase.committed) return undefined;
      if (submit !== undefined && madeAgain(record, submit)) return undefined;
      // Never older than the write it follows: a reader drops a record older than one it has
      // seen (a watch lagging behind), and this runtime's clock may be behind the supervisor's.
      const at = Math.max(now, record.updatedAt + 1);
      return {
        ...record,
        status: "failed",
        counts: maxCounts(record.counts, counts),
        reason: boundReason(`cancelled: ${reason}`),
        updatedAt: at,
        finishedAt: at,
      };
    };
    // The mark needs the job's queue and kind, from its record: the write starts from that read.
    const read = yield* fromPort(() => port.getRecord(id));
    if (!read) return undefined;
    // A submit not committed has nothing to clean up (a lane one may be, once its task is read).
    const cleans = read.record.phase === SubmitPhase.committed || read.record.lane === true;
    const below = cleans ? yield* Effect.promise(() => tasksMarkOr(port, read.record)) : undefined;
    // Written from that read (nothing to write: the record as read), never onto another submit's.
    const mine = submit === undefined ? {} : { submit };
    const seen: RecordSeen = { last: read, ...mine };
    const first =
      change(read.record) === undefined
        ? read.record
        : yield* updateRecordWithEffect(port, id, change, 10, seen);
    // A lane job whose commit is not written yet (its record says `submitting`): cancelled as
    // committed once its task, or a result of it, is read stored.
    const laneSubmit = first ? yield* fromPort(() => laneSubmitCommitted(port, first)) : undefined;
    const laneSeen: RecordSeen = laneSubmit === undefined ? seen : { laneSubmit, ...mine };
    const stored =
      laneSubmit === undefined ? first : yield* updateRecordWithEffect(port, id, change, 10, laneSeen);
    if (
      stored &&
      stored.phase === SubmitPhase.committed &&
      (submit === undefined || !madeAgain(stored, submit))
    )
      // The end is recorded: a removal that fails does not undo the cancel (a caller told it
      // failed, tried again, was answered the end and nothing was removed). Said to `tasksLeft`;
      // the cleanup pass removes what is left, and workers drop a task of a job over.
      yield* fromPort(() => port.removeTasks(stored, below)).pipe(
        Effect.catch((error) => Effect.sync(() => tasksLeft(error))),
      );
    if (!stored) return undefined;
    // As written here, or as first read (nothing to write).
    const known = laneSeen.last ?? seen.last;
    if (known?.record === stored) return known;
    // Found over after a conflict (another writer's end): its revision is read, so a reader
    // that knows the conflicting write does not take this one for an older one.
    return yield* fromPort(() => port.getRecord(id));
  });

/**
 * The submit of a 1-task lane job whose record still says `submitting` while
 * its task, or a result of it, is stored (`tasksCommitted`): committed
 * (`asCommittedLane`). A lane job of more tasks is committed by its record's
 * write only. Undefined for any other record, or one with neither
 * stored. A result names its job, not its submit: one stored by an earlier
 * submit of the same key (rolled back after its task ran) is an answer to
 * the same tasks (the key names one request), and reads as this one's.
 */
export const laneSubmitCommitted = async (
  port: Pick<JobPort, "tasksCommitted">,
  record: JobRecord,
): Promise<string | undefined> =>
  commitsOnPublish(record) && record.phase === SubmitPhase.submitting && (await port.tasksCommitted(record))
    ? record.submitId
    : undefined;

/**
 * A job's record as a reader takes it: as stored, unless it says
 * `submitting`, which is no job yet, but for a lane job whose task is
 * stored (`laneSubmitCommitted`): that one is committed, its record read
 * again (it may have moved on, to its end or a cancel, while the task was
 * looked for) and taken as committed while it still says `submitting`.
 * `uncommitted: "as stored"` answers a record that is no job yet as it was
 * read (the last read), not undefined.
 */
export const committedRecord = async (
  port: Pick<JobPort, "getRecord" | "tasksCommitted">,
  found: RecordFound | undefined,
  uncommitted: "none" | "as stored" = "none",
): Promise<RecordFound | undefined> => {
  const notYet = (read: RecordFound) => (uncommitted === "none" ? undefined : read);
  if (found?.record.phase !== SubmitPhase.submitting) return found;
  const laneSubmit = await laneSubmitCommitted(port, found.record);
  if (laneSubmit === undefined) return notYet(found);
  const again = await port.getRecord(found.record.id);
  if (!again || again.record.phase !== SubmitPhase.submitting) return again;
  const record = asCommittedLane(again.record, laneSubmit);
  return record === again.record ? notYet(again) : { record, revision: again.revision };
};

/**
 * A job's record as it is shown (`GET /jobs/:id`, the dashboard, a flow's
 * node): committed when `committedRecord` finds it so (a lane job whose
 * commit is not written yet), otherwise as last read, a submit still under
 * way included.
 */
export const shownRecord = async (
  port: Pick<JobPort, "getRecord" | "tasksCommitted">,
  id: string,
): Promise<RecordFound | undefined> => committedRecord(port, await port.getRecord(id), "as stored");

export const cancelJob = (
  port: JobPort,
  id: string,
  reason: string,
  counts: JobCounts,
  now: number,
  options: {
    /** Where a clean-up that failed after the end was recorded is said (at warn). */
    readonly log: Logger;
    /** The submit of the job to cancel (undefined: the record's, whichever): another's is left as read (`madeAgain`). */
    readonly submit?: string;
  },
): Promise<RecordFound | undefined> => {
  const tasksLeft = (error: unknown) =>
    options.log.warn(
      { err: error, jobId: id },
      "job cancelled; its tasks not removed: the cleanup pass removes them",
    );
  return Effect.runPromise(cancelJobEffect(port, id, reason, counts, now, options.submit, tasksLeft));
};

/**
 * The answers a supervisor counted, raised onto the end another runtime
 * recorded (`ended`, as heard; never lowered; status, reason and end time
 * stay): a cancel from a runtime that had not counted every answer yet wrote
 * the counts it knew, up to a second behind. Nothing is read or written when
 * that end has them. A failure as in an outage is tried again (as the end's
 * own write is, `endRetry`) until `signal` aborts, by this call or, given
 * `later`, by what `later` runs it on (this call then settles after the
 * first try); any other failure is logged.
 */
export const raiseEndCounts = async (
  port: JobRecords,
  ended: JobRecord,
  counts: JobCounts,
  now: number,
  log: Logger,
  signal: AbortSignal,
  later?: (tries: () => Promise<void>) => void,
): Promise<void> => {
  const more = (record: JobRecord) => answered(maxCounts(record.counts, counts)) > answered(record.counts);
  if (!more(ended)) return;
  const raise = async () => {
    // That end only: one recorded since (a redrive reopened the job, which ended again, its
    // dead answers forgotten) is not what these counts were raised onto.
    await updateRecordWith(port, ended.id, (record) =>
      isSameEnd(record, ended) && more(record)
        ? {
            ...record,
            counts: maxCounts(record.counts, counts),
            updatedAt: Math.max(now, record.updatedAt + 1),
          }
        : undefined,
    );
  };
  // Said at warn once, and when it is given up; the tries between at debug.
  let failures = 0;
  const failed = (error: unknown, again: boolean) =>
    log[again && failures++ > 0 ? "debug" : "warn"](
      { err: error, jobId: ended.id },
      again
        ? "the answers counted here not raised onto the end recorded elsewhere; tried again"
        : "the answers counted here not raised onto the end recorded elsewhere",
    );
  await plainThenUntilDone(raise, endRetry, signal, isTransient, failed, later);
};

/** Whether `record` is the end `ended` (the same submit, status, reason, end time and redrive), whatever its counts. */
const isSameEnd = (record: JobRecord, ended: JobRecord): boolean =>
  isFinal(record.status) &&
  record.submitId === ended.submitId &&
  record.status === ended.status &&
  (record.reason ?? null) === (ended.reason ?? null) &&
  record.finishedAt === ended.finishedAt &&
  record.redrive === ended.redrive;

/** The pauses between two tries of a job's end (or of a raise onto one) whose write failed transiently. */
export const endRetry = { initialMs: 250, maxMs: 5000, jitter: true } as const;

/**
 * The end of a job whose record went with the server's store (it came back
 * empty): written as a new record, what the job was with its end, so that
 * `get()`, `list()` and `events()` anywhere say how it ended, as the lost
 * path does (`recordLost`). A record made again meanwhile (another runtime
 * recorded the loss) is ended as any other, unless it already has an end.
 */
const remadeWithEnd = async (
  port: JobPort,
  job: JobRecord,
  input: FinalizeInput,
  now: number,
  end: (record: JobRecord) => JobRecord | undefined,
  seen: RecordSeen | undefined,
): Promise<JobRecord | undefined> => {
  const remade: JobRecord = {
    ...job,
    status: input.status,
    phase: SubmitPhase.committed,
    counts: input.counts,
    ...(input.reason ? { reason: input.reason } : {}),
    updatedAt: now,
    finishedAt: now,
  };
  try {
    const revision = await port.createRecord(remade);
    if (seen) wrote(seen, remade, revision);
    return remade;
  } catch (error) {
    if (!isConflict(error)) throw error;
    return updateRecordWith(port, job.id, end, 10, seen);
  }
};

/**
 * The end of a job: the record says how it ended, then its consumer is deleted
 * (workers' loops for it end) and any task left is purged. Results stay for
 * `results()` until the results stream's retention removes them. Plain
 * promises: its record write runs outside Effect's runtime unless it meets
 * a conflict (`updateRecordWith`).
 */
export const finalizeJob = async (
  port: JobPort,
  input: FinalizeInput,
  now: () => number,
  seen?: RecordSeen,
  /** The job as its actor knows it: its end is written as a new record when the store lost the record. */
  job?: JobRecord,
  /** The redrives whose markers the supervisor counted (undefined: any). */
  counted?: (redrive: string) => boolean,
  /** The mark read by an earlier try of this end, kept for the next (one read before the end may have landed). */
  mark?: EndMark,
): Promise<JobRecord | undefined> => {
  const known = seen?.last?.record;
  // A lane job whose task is answered leaves nothing to remove (below): no mark read.
  const laneAnswered = known?.lane === true && input.counts.done + input.counts.failed === known.total;
  let read = mark?.below;
  if (!laneAnswered && read === undefined) {
    read = tasksMarkOr(port, known ?? { queue: input.queue, id: input.jobId });
    if (mark) mark.below = read;
  }
  const below = laneAnswered ? undefined : await read;
  // An end is written once: another runtime's (or a cancel's) stays. None over a redrive not
  // counted (`uncountedRedrive`): the record as read is returned, nothing is cleaned up, and
  // the supervisor counts the marker and decides again.
  const end = (record: JobRecord): JobRecord | undefined =>
    isFinal(record.status) || uncountedRedrive(record, counted) !== undefined
      ? undefined
      : {
          ...record,
          status: input.status,
          counts: supervisedCounts(record, input.counts),
          ...(input.reason ? { reason: input.reason } : {}),
          ...(record.phase === SubmitPhase.submitting ? { phase: SubmitPhase.rolledBack } : {}),
          updatedAt: now(),
          finishedAt: now(),
        };
  const stored = await updateRecordWith(port, input.jobId, end, 10, seen).then(
    (found) => found ?? (job ? remadeWithEnd(port, job, input, now(), end, seen) : undefined),
  );
  // Another submit's record (`seen.submit`: the store came back empty and the key was submitted
  // again) is left as read, and nothing of that job is cleaned up: the caller ends this job lost.
  const submit = seen?.submit;
  if (stored && submit !== undefined && madeAgain(stored, submit)) return stored;
  if (stored && uncountedRedrive(stored, counted) !== undefined) return stored;
  await cleanUpEnd(port, stored ?? { queue: input.queue, id: input.jobId }, below);
  return stored;
};

/**
 * The tasks mark a job's end read before its first write (`finalizeJob`): a
 * try after a write whose answer was lost reads none of its own, as the
 * end may have landed meanwhile and a redrive published tasks since.
 */
export interface EndMark {
  below?: Promise<number | undefined>;
}

/**
 * What follows a job's end: its tasks left (below `below`) removed and its
 * consumer deleted. The stored record says where the tasks are (a lane
 * job's are on its queue's lane); a lane job whose task is answered has
 * none left.
 */
export const cleanUpEnd = async (port: JobPort, job: JobRecord | JobTasksRef, below: number | undefined) => {
  if ("status" in job && laneTaskAnswered(job)) return;
  await port.removeTasks(job, below);
};

/**
 * The job's tasks stream's mark (`tasksMark`), read before its end or
 * cancel is written: the clean-up that follows the write removes only what
 * was stored before it. A redrive reads the end, then publishes the dead
 * tasks again, and the clean-up, which may come later (a slow supervisor),
 * purged them too: the job ran again with nothing to run. Undefined when the
 * read fails: the clean-up then removes every task of the job, as before.
 */
const tasksMarkOr = (port: Pick<JobPort, "tasksMark">, job: JobTasksRef): Promise<number | undefined> =>
  port.tasksMark(job).catch(() => undefined);
