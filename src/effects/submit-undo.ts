import { Effect } from "effect";
import type { JobPort } from "../adapters/job-port.ts";
import type { RecordFound } from "../adapters/job-records.ts";
import { type JobRecord, SubmitPhase } from "../kernel/job-record.ts";
import { laneSubmitCommitted } from "./finalize-job.ts";
import { fromPort, isConflict, type PortFailure } from "./port-call.ts";

/*
 * What finishes a submit other than its own commit: its rollback (its
 * record marked, its tasks removed) and its roll-forward (its commit written
 * for it), as its submitter, the reaper, a takeover or a schedule's fire
 * does them (effects/submit-job.ts, effects/reap-submits.ts).
 */

/**
 * A 1-task lane submit's record, read at `found`: committed if its task,
 * or a result of it, is stored (`laneSubmitCommitted`), its commit written
 * now. The committed record, or undefined when its task is not stored or
 * the record changed since it was read.
 */
export const rollLaneForwardEffect = (
  port: JobPort,
  found: { readonly record: JobRecord; readonly revision: number },
  now: () => number,
): Effect.Effect<RecordFound | undefined, PortFailure> =>
  Effect.gen(function* () {
    if ((yield* fromPort(() => laneSubmitCommitted(port, found.record))) === undefined) return undefined;
    return yield* rollForward(port, found.record, found.revision, now);
  });

/**
 * Commits a submit past its commit point (its consumer made; a lane job's
 * task stored) whose record, read at `revision`, still says `submitting`:
 * the committed record, or undefined when it changed since (the write's
 * compare-and-set).
 */
export const rollForward = (port: JobPort, record: JobRecord, revision: number, now: () => number) => {
  const committed: JobRecord = {
    ...record,
    phase: SubmitPhase.committed,
    status: "running",
    updatedAt: now(),
  };
  return fromPort(() => port.updateRecord(committed, revision)).pipe(
    Effect.map((written): RecordFound | undefined => ({ record: committed, revision: written })),
    Effect.catchTag("RevisionConflict", () => Effect.succeed(undefined)),
  );
};

/** Whether the record `found` still holds `record`'s submit, not committed, rolled back or replaced. */
export const isSameSubmit = (found: RecordFound | undefined, record: JobRecord): found is RecordFound =>
  found?.record.phase === SubmitPhase.submitting && found.record.submitId === record.submitId;

/**
 * Marks a submit that never committed rolled back; a committed job is
 * supervised instead, and another submit of the key that holds the record
 * now (this one was rolled back, then the record taken over) is left alone.
 */
const markRolledBack = (port: JobPort, record: JobRecord, reason: string, now: () => number) =>
  Effect.gen(function* () {
    const found = yield* fromPort(() => port.getRecord(record.id));
    if (!isSameSubmit(found, record)) return false;
    yield* fromPort(() =>
      port.updateRecord(
        {
          ...found.record,
          phase: SubmitPhase.rolledBack,
          status: "failed",
          reason,
          updatedAt: now(),
          finishedAt: now(),
        },
        found.revision,
      ),
    );
    return true;
  });

/**
 * Undoes a submit: no task stays visible, the record says why it failed. The
 * record is re-read and written up to 5 times against concurrent writers;
 * after that the writer that kept winning decides. Only while the record
 * still holds this submit (or is gone): rolled back already (the reaper's,
 * which removed its tasks), taken over by the next submit of the key, or
 * committed (its commit stored though its answer was lost, or rolled
 * forward), what is stored under the job's subject and consumer is that
 * record's job's, and the removal wiped it (the job then never ran).
 */
export const rollBackEffect = (
  port: JobPort,
  record: JobRecord,
  reason: string,
  now: () => number,
): Effect.Effect<RecordFound | undefined, PortFailure> =>
  Effect.gen(function* () {
    const found = yield* fromPort(() => port.getRecord(record.id));
    // Committed by this very submit (its commit stored, its answer lost): it stands, and the
    // caller is told so (the job runs; a submit failed over it made a duplicate on a retry).
    if (found?.record.submitId === record.submitId && found.record.phase === SubmitPhase.committed)
      return found;
    if (found !== undefined && !isSameSubmit(found, record)) return undefined;
    yield* fromPort(() => port.removeTasks(record));
    yield* markRolledBackSettled(port, record, reason, now);
    return undefined;
  });

/**
 * `markRolledBack`, tried again on a conflict (a concurrent progress or
 * takeover write) up to four more times, then left: what the record says
 * then is another writer's, which the caller reads or leaves.
 */
const markRolledBackSettled = (port: JobPort, record: JobRecord, reason: string, now: () => number) =>
  markRolledBack(port, record, reason, now).pipe(
    Effect.retry({ times: 4, while: isConflict }),
    Effect.catchTag("RevisionConflict", () => Effect.succeed(false)),
  );

export const rollBack = (port: JobPort, record: JobRecord, reason: string, now: () => number) =>
  Effect.runPromise(rollBackEffect(port, record, reason, now)).then(() => undefined);

/**
 * Rolls a lane submit back, its record first: marked rolled back, then its
 * tasks removed if it was (`rollBackLane`), those stored before the mark
 * only. Once the record says rolled back, another submit of the key may
 * take it over and publish its own tasks on the same subject while these
 * are being removed one by one: they are stored past the mark, and stay.
 * Resolves with the record when it was found committed instead (its commit
 * written by then), otherwise undefined.
 */
export const rollBackLaneEffect = (
  port: JobPort,
  record: JobRecord,
  reason: string,
  now: () => number,
): Effect.Effect<RecordFound | undefined, PortFailure> =>
  Effect.gen(function* () {
    const below = yield* fromPort(() => port.tasksMark(record));
    const marked = yield* markRolledBackSettled(port, record, reason, now);
    const found = yield* fromPort(() => port.getRecord(record.id));
    const ours = found?.record.submitId === record.submitId;
    if (ours && found?.record.phase === SubmitPhase.committed) return found;
    // Marked here (the record may hold the next submit of the key already: its tasks, past the
    // mark, stay), or found rolled back (this mark's answer lost, or another rollback's of this
    // submit). Not when another rollback marked it and the key was taken over since: that one
    // removes what is below its own mark, and this mark may be past the next submit's tasks.
    // Still `submitting`: the mark lost to other writes each time; the reaper's next pass tries again.
    if (marked || (ours && found?.record.phase === SubmitPhase.rolledBack))
      yield* fromPort(() => port.removeTasks(record, below));
    return undefined;
  });
