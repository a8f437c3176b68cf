import { flowNodeOfKey } from "./flow-record.ts";
import { isFinal, type JobRecord, SubmitPhase } from "./job-record.ts";

/**
 * What cleanup may touch, decided from the job records alone, the same for
 * every broker: a job is over when it has no record, or a final one that
 * committed (a submit still in progress is the reaper's, never cleanup's);
 * it has expired once it has been over for the retention period.
 */
export interface CleanupPlan {
  readonly records: ReadonlyMap<string, JobRecord>;
  /** True for a job id whose leftovers (consumer, tasks, lease) may go. */
  over(jobId: string): boolean;
  /** Finished jobs past retention: their record, results and dead letters go. */
  readonly expired: readonly JobRecord[];
  /** True when a job's results may go: no record, or an expired one. */
  resultsGone(jobId: string): boolean;
  /**
   * Jobs not over (running, or a submit in progress) that have no lease:
   * takeover and the reaper look at the leases only, so these get one.
   */
  unleased(leased: ReadonlySet<string>): JobRecord[];
}

/** A job whose leftovers may go: it ended, and not in a submit still in progress (the reaper's). */
export const isFinished = (r: JobRecord): boolean => isFinal(r.status) && r.phase !== SubmitPhase.submitting;

/**
 * `liveFlows`: the flows not settled. A node's job of one of them is kept
 * past retention: its flow's driver, not having seen its end yet, would
 * read it as never submitted and submit it again (its tasks run twice).
 */
export const planCleanup = (
  records: readonly JobRecord[],
  retentionMs: number,
  now: number,
  liveFlows: ReadonlySet<string> = new Set(),
): CleanupPlan => {
  const byId = new Map(records.map((r) => [r.id, r]));
  const finished = isFinished;
  const inLiveFlow = (r: JobRecord): boolean => {
    const node = flowNodeOfKey(r.idempotencyKey);
    return node !== undefined && liveFlows.has(node.flowId);
  };
  const expired = records.filter(
    (r) => finished(r) && (r.finishedAt ?? r.updatedAt) + retentionMs <= now && !inLiveFlow(r),
  );
  const expiredIds = new Set(expired.map((r) => r.id));
  return {
    records: byId,
    over: (jobId) => {
      const record = byId.get(jobId);
      return !record || finished(record);
    },
    expired,
    resultsGone: (jobId) => !byId.has(jobId) || expiredIds.has(jobId),
    unleased: (leased) => records.filter((r) => !finished(r) && !leased.has(r.id)),
  };
};

/** The last token of a subject: the job id in `<prefix>.tasks.<queue>.<jobId>` and `<prefix>.results.<jobId>`. */
export const jobIdOfSubject = (subject: string): string => subject.slice(subject.lastIndexOf(".") + 1);
