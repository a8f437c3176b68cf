import { Effect } from "effect";
import type { JobPort } from "../adapters/job-port.ts";
import { commitDeadlineBy, commitsOnPublish, type JobRecord, SubmitPhase } from "../kernel/job-record.ts";
import { fromPort, type PortFailure } from "./port-call.ts";
import {
  isSameSubmit,
  rollBackEffect,
  rollBackLaneEffect,
  rollForward,
  rollLaneForwardEffect,
} from "./submit-undo.ts";

/** A record the reaper looks at, as read: with the server's stamp of its write where known. */
export interface ReapCandidate {
  readonly record: JobRecord;
  readonly storedAt?: number | undefined;
}

export interface ReapReport {
  /** Submits that died before their commit point: tasks purged, record failed. */
  readonly rolledBack: readonly string[];
  /** Submits that died after their commit point: the commit stands, the record says running. */
  readonly rolledForward: readonly string[];
}

/**
 * Finishes the submits that did not finish themselves. The consumer is the
 * commit point (a 1-task lane job's: its task, or a result of it, stored; a
 * lane job of more tasks': its record's commit, which this never finds): a submit
 * past it is rolled forward, any other is rolled back. It only touches records whose commit deadline passed by
 * `graceMs`, and a submitter checks that deadline before it commits, so the
 * two never undo each other's work (a 1-task lane job's publish answered
 * past its deadline writes its commit at once, a compare-and-set on the
 * revision this pass marks: `commitLatePublish`). The deadline is judged by
 * the server's clock (`commitDeadlineBy`: the submit's window from the
 * server's stamp of its record, `aheadMs` the reader's clock ahead of the
 * server's): by the deadline as written, a reaper whose clock was a minute
 * ahead rolled back a live submit, and a submitter ahead that died was left
 * for as long as it was ahead. `found`: the records to look at, as read
 * (with the server's stamps); every record when absent.
 */
const reapSubmitsEffect = (
  port: JobPort,
  now: () => number,
  graceMs: number,
  aheadMs: () => number | undefined,
  found?: readonly ReapCandidate[],
): Effect.Effect<ReapReport, PortFailure> =>
  Effect.gen(function* () {
    const rolledBack: string[] = [];
    const rolledForward: string[] = [];
    const past = (read: ReapCandidate) => now() >= commitDeadlineBy(read, aheadMs()) + graceMs;
    // Listed, records come without the server's stamps: each one submitting is judged as read below.
    const candidates: readonly ReapCandidate[] =
      found ?? (yield* fromPort(() => port.listRecords())).map((record) => ({ record }));
    for (const listed of candidates) {
      if (listed.record.phase !== SubmitPhase.submitting || (listed.storedAt !== undefined && !past(listed)))
        continue;
      // Read again: by now the record may hold another submit of its key (this one rolled back
      // by another reaper, then taken over), whose tasks and record are not this pass's to undo.
      const again = yield* fromPort(() => port.getRecord(listed.record.id));
      if (!isSameSubmit(again, listed.record) || !past(again)) continue;
      const { record, revision } = again;
      // A lane job of more tasks commits by its record's write alone: its tasks stored say nothing.
      const pastCommitPoint = !record.lane || commitsOnPublish(record);
      if (pastCommitPoint && (yield* fromPort(() => port.tasksCommitted(record)))) {
        if (yield* rollForward(port, record, revision, now)) rolledForward.push(record.id);
      } else {
        const reason = "submit did not commit before its deadline (rolled back by the reaper)";
        // A lane job's record first: a commit its submitter wrote meanwhile keeps its tasks.
        const committed = record.lane
          ? yield* rollBackLaneEffect(port, record, reason, now)
          : yield* rollBackEffect(port, record, reason, now);
        if (committed === undefined) rolledBack.push(record.id);
      }
    }
    return { rolledBack, rolledForward };
  });

export const reapSubmits = (
  port: JobPort,
  now: () => number,
  graceMs: number,
  aheadMs: () => number | undefined,
  found?: readonly ReapCandidate[],
): Promise<ReapReport> => Effect.runPromise(reapSubmitsEffect(port, now, graceMs, aheadMs, found));

/**
 * Commits a lane job whose submitter stopped before the job's first write
 * after its publish (that write carries a lane job's commit): committed if
 * its task, as its submit published it, is stored (`laneSubmitCommitted`).
 * Safe before the commit deadline, unlike a roll back: the submitter, if it
 * still runs, writes the same commit (its compare-and-set then reads this
 * one), or, its publish failed though the task was stored, finds it
 * committed before it would remove the task (`rollBackLane`). False when
 * its task is not stored, or the record changed since `found` was read.
 */
export const rollLaneForward = async (
  port: JobPort,
  found: { readonly record: JobRecord; readonly revision: number },
  now: () => number,
): Promise<boolean> => (await Effect.runPromise(rollLaneForwardEffect(port, found, now))) !== undefined;
