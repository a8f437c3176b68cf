import { RevisionConflict } from "../errors.ts";
import type { FinalizeInput } from "../machines/job.machine.ts";
import type { JobPort } from "./job-port.ts";
import { type JobCounts, type JobRecord, type JobStatus, SubmitPhase } from "./job-record.ts";

/**
 * Writes a record change with compare-and-set, re-reading on a conflict so a
 * concurrent writer (another supervisor, the reaper) is never overwritten
 * blindly. `change` returns undefined when nothing needs writing.
 */
export const updateRecordWith = async (
  port: JobPort,
  id: string,
  change: (record: JobRecord) => JobRecord | undefined,
  attempts = 10,
): Promise<JobRecord | undefined> => {
  for (let i = 0; i < attempts; i++) {
    const found = await port.getRecord(id);
    if (!found) return undefined;
    const next = change(found.record);
    if (!next) return found.record;
    try {
      await port.updateRecord(next, found.revision);
      return next;
    } catch (error) {
      if (!(error instanceof RevisionConflict)) throw error;
    }
  }
  throw new RevisionConflict({ message: `job record ${id} kept changing`, key: id });
};

/** Progress written while the job runs; a final record is never reopened. */
export const recordProgress = (
  port: JobPort,
  id: string,
  status: JobStatus,
  counts: JobCounts,
  now: number,
) =>
  updateRecordWith(port, id, (record) => {
    if (record.status === "succeeded" || record.status === "failed") return undefined;
    const same =
      record.status === status &&
      record.counts.done === counts.done &&
      record.counts.failed === counts.failed &&
      record.counts.dead === counts.dead;
    return same ? undefined : { ...record, status, counts, updatedAt: now };
  });

/**
 * The end of a job: the record says how it ended, then its consumer is deleted
 * (workers' loops for it end) and any task left is purged. Results stay for
 * `results()` until the results stream's retention removes them.
 */
export const finalizeJob = async (port: JobPort, input: FinalizeInput, now: () => number): Promise<void> => {
  await updateRecordWith(port, input.jobId, (record) => {
    if (record.status === "succeeded" || record.status === "failed") return undefined;
    return {
      ...record,
      status: input.status,
      counts: input.counts,
      ...(input.reason ? { reason: input.reason } : {}),
      ...(record.phase === SubmitPhase.submitting ? { phase: SubmitPhase.rolledBack } : {}),
      updatedAt: now(),
      finishedAt: now(),
    };
  });
  await port.removeTasks(input.queue, input.jobId);
};
