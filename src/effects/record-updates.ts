import { Effect } from "effect";
import type { JobRecords, RecordFound } from "../adapters/job-records.ts";
import { Deposed, RevisionConflict, TransientBrokerError } from "../kernel/errors.ts";
import {
  asCommittedLane,
  isFinal,
  type JobCounts,
  type JobRecord,
  type JobStatus,
  madeAgain,
  movesBackwards,
  SubmitPhase,
  supervisedCounts,
} from "../kernel/job-record.ts";
import { fromPort, isConflict, type PortFailure } from "./port-call.ts";

/**
 * A job's record as its actor last wrote or read it, with that revision: the
 * first compare-and-set of the next change is tried on it, without a read
 * (a small job's end read the record it had written itself a few ms before).
 */
export interface RecordSeen {
  last?: RecordFound;
  /** The record being written now: its watch may show it before its write is acknowledged. */
  writing?: JobRecord;
  /**
   * The write before `last`: its watch may show it only after the next write was
   * acknowledged (a small job's commit, seen after its end).
   */
  before?: JobRecord;
  /**
   * The submit of this lane job known committed (`asCommittedLane`): its
   * record, still `submitting` until its next write, is written from as
   * committed.
   */
  laneSubmit?: string;
  /**
   * `last` is a lane job's commit as its submit took it, never written (at
   * its create's revision): no watch shows it, so it is not kept as
   * `before` (a record more on every live lane job).
   */
  lastUnwritten?: boolean;
  /**
   * The submit whose record this is: a record another submit made again
   * (`madeAgain`) is never changed; the change answers it as read.
   */
  submit?: string;
  /**
   * This runtime's lease holder, for a supervisor's writes: refused
   * (`Deposed`) once the record names another supervisor (`fenceOf`).
   */
  holder?: string;
  /**
   * False from a take of the job's lease until the record names this
   * runtime (`takeRecord`): the actor acts as the job's supervisor only then.
   */
  fenced?: boolean;
  /** The take's own change while it is in flight (`takeRecord`): the one write not fenced. */
  taking?: (record: JobRecord) => JobRecord | undefined;
}

/**
 * A supervisor's write of `record` is refused once the record names another
 * supervisor: one took the job over since this runtime last wrote it, its
 * name written before it acted. Also while this actor takes its lease
 * back: a write of its own in flight then must not land on a taker's
 * record. Only the take's own write, which names it, is not fenced
 * (`seen.taking`). While that take is on its way the refusal is not yet
 * known to stand: the take may name this runtime (a taker came and went),
 * so the write fails as transient (an end is tried again, a progress write
 * is carried by the next), not `Deposed`.
 */
const fenceOf = (
  record: JobRecord,
  seen: RecordSeen | undefined,
  change: (record: JobRecord) => JobRecord | undefined,
): void => {
  if (seen?.holder === undefined || seen.taking === change) return;
  if (record.supervisor === undefined || record.supervisor === seen.holder) return;
  if (seen.taking !== undefined)
    throw new TransientBrokerError({
      message: `job ${record.id} names ${record.supervisor} while this runtime's take of it is on its way`,
      operation: "job.record.update",
    });
  throw new Deposed({
    message: `job ${record.id} is supervised by ${record.supervisor} now`,
    jobId: record.id,
    supervisor: record.supervisor,
  });
};

/** Whether `changed` is the record `written` (the same write: its time, status and counts). */
export const isSameWrite = (changed: JobRecord, written: JobRecord | undefined): boolean =>
  written !== undefined &&
  changed.updatedAt === written.updatedAt &&
  changed.status === written.status &&
  changed.counts.done === written.counts.done &&
  changed.counts.failed === written.counts.failed &&
  changed.counts.dead === written.counts.dead;

/** Remembers a write acknowledged at `revision`: the record seen last, and the one before it. */
export const wrote = (seen: RecordSeen, record: JobRecord, revision: number): void => {
  if (seen.last && !seen.lastUnwritten) seen.before = seen.last.record;
  seen.last = { record, revision };
  if (seen.lastUnwritten) seen.lastUnwritten = false;
};

/**
 * Writes a record change with compare-and-set, re-reading on a conflict so a
 * concurrent writer (another supervisor, the reaper) is never overwritten
 * blindly. `change` returns undefined when nothing needs writing. With
 * `seen`, the first try starts from the record seen last (a conflict means
 * it is stale: the next tries read), and what is written is seen next.
 */
export const updateRecordWithEffect = (
  port: JobRecords,
  id: string,
  change: (record: JobRecord) => JobRecord | undefined,
  attempts = 10,
  seen?: RecordSeen,
): Effect.Effect<JobRecord | undefined, PortFailure> =>
  updateRetried(port, id, change, attempts, seen, seen?.last);

/** The compare-and-set with its retries; the first try starts from `known` (undefined: it reads). */
const updateRetried = (
  port: JobRecords,
  id: string,
  change: (record: JobRecord) => JobRecord | undefined,
  attempts: number,
  seen: RecordSeen | undefined,
  known: RecordSeen["last"],
): Effect.Effect<JobRecord | undefined, PortFailure> => {
  let from = known;
  const attempt = fromPort(() => {
    const kept = from;
    from = undefined;
    return updateOnce(port, id, change, seen, kept);
  });
  // Made only when it happens: an error is made with its stack (~2 % of a small job's CPU, made
  // for every record write when it was made up front).
  const keptChanging = Effect.suspend(() =>
    Effect.fail(new RevisionConflict({ message: `job record ${id} kept changing`, key: id })),
  );
  if (attempts <= 0) return keptChanging;
  return attempt.pipe(
    Effect.retry({ times: attempts - 1, while: isConflict }),
    Effect.catchTag("RevisionConflict", () => keptChanging),
  );
};

/**
 * The change of a record. A lane job whose commit is not written yet is
 * changed as committed (`seen.laneSubmit`: the stored record still says
 * `submitting`; `unwritten`: the record is the commit its submit took, at
 * the create's revision), and its commit is written even by a change that
 * has nothing else to say (the progress write a second after its submit, of
 * a job nothing answered yet).
 */
const changeFrom = (
  record: JobRecord,
  change: (record: JobRecord) => JobRecord | undefined,
  seen: RecordSeen | undefined,
  unwritten = false,
): JobRecord | undefined => {
  if (seen?.submit !== undefined && madeAgain(record, seen.submit)) return undefined;
  fenceOf(record, seen, change);
  const from = asCommittedLane(record, seen?.laneSubmit);
  return change(from) ?? (unwritten || from !== record ? from : undefined);
};

/** One compare-and-set of the change, from `kept` (the record seen last) or from a read. */
const updateOnce = async (
  port: JobRecords,
  id: string,
  change: (record: JobRecord) => JobRecord | undefined,
  seen: RecordSeen | undefined,
  kept: RecordSeen["last"],
): Promise<JobRecord | undefined> => {
  let found = kept ?? (await port.getRecord(id));
  if (!found) return undefined;
  // From `kept` that is a lane job's commit its submit never wrote: written with no read.
  let next = changeFrom(found.record, change, seen, kept !== undefined && seen?.lastUnwritten === true);
  // "Nothing to write" is the store's to say: a write of this actor's may still be on its way.
  if (!next && kept) {
    found = await port.getRecord(id);
    if (!found) return undefined;
    next = changeFrom(found.record, change, seen);
  }
  if (!next) return found.record;
  if (seen) seen.writing = next;
  const revision = await port.updateRecord(next, found.revision);
  if (seen) wrote(seen, next, revision);
  return next;
};

/**
 * `updateRecordWithEffect` as a promise. Its first try runs as plain
 * promises, outside Effect's runtime: nearly every write meets no conflict,
 * and an Effect program for each (every job's end, every progress write)
 * was ~3.5 % of a small job's CPU. A conflict goes on in the Effect program,
 * with the tries left.
 */
export const updateRecordWith = async (
  port: JobRecords,
  id: string,
  change: (record: JobRecord) => JobRecord | undefined,
  attempts = 10,
  seen?: RecordSeen,
): Promise<JobRecord | undefined> => {
  if (attempts <= 1) return Effect.runPromise(updateRecordWithEffect(port, id, change, attempts, seen));
  try {
    return await updateOnce(port, id, change, seen, seen?.last);
  } catch (error) {
    if (!isConflict(error)) throw error;
  }
  // The record seen last was stale, or another writer came first: the next tries read.
  return Effect.runPromise(updateRetried(port, id, change, attempts - 1, seen, undefined));
};

/**
 * Progress written while the job runs, as a compare-and-set on the revision
 * read. It never moves the job backwards: not to a lower status (a write
 * planned while the job was queuing lands after its commit), never below the
 * stored counts (a redriven job's dead count aside: `supervisedCounts`),
 * never onto a submit not yet committed (the submitter's own compare-and-set
 * would then fail; a lane job's whose task its actor knows stored is
 * committed, and the write carries its commit: `changeFrom`) and never onto
 * an end. `counts` as a function is read on each try: a try after a conflict
 * writes what is counted by then.
 */
export const recordProgress = (
  port: JobRecords,
  id: string,
  status: JobStatus,
  counts: JobCounts | (() => JobCounts),
  now: number,
  seen?: RecordSeen,
) =>
  updateRecordWith(
    port,
    id,
    (record) => {
      if (record.phase !== SubmitPhase.committed || isFinal(record.status)) return undefined;
      const nextStatus = movesBackwards(record.status, status) ? record.status : status;
      const nextCounts = supervisedCounts(record, typeof counts === "function" ? counts() : counts);
      const same =
        record.status === nextStatus &&
        record.counts.done === nextCounts.done &&
        record.counts.failed === nextCounts.failed &&
        record.counts.dead === nextCounts.dead;
      return same ? undefined : { ...record, status: nextStatus, counts: nextCounts, updatedAt: now };
    },
    10,
    seen,
  );
