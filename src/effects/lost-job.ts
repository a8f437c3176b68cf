import type { JobPort } from "../adapters/job-port.ts";
import type { JobRecords } from "../adapters/job-records.ts";
import { RevisionConflict } from "../kernel/errors.ts";
import { isFinal, type JobCounts, type JobRecord, maxCounts, SubmitPhase } from "../kernel/job-record.ts";
import { updateRecordWith } from "./finalize-job.ts";

/**
 * Why the job's tasks can never be answered, if they cannot: its consumer is
 * gone, and its record is gone too (the server came back with an empty
 * store) or still says it runs (every end and cancel is written to the
 * record before the consumer is deleted, so a running job has a consumer).
 * Undefined while the consumer exists, or when the record says it ended.
 */
export const lostReason = async (
  broker: JobPort,
  queue: string,
  jobId: string,
): Promise<string | undefined> => {
  if (await broker.consumerExists(queue, jobId)) return undefined;
  const found = await broker.getRecord(jobId);
  if (found === undefined)
    return "tasks lost: the server's store was reset (the job's record and consumer are gone)";
  if (found.record.status === "running" || found.record.status === "stalled")
    return "tasks lost: the job's consumer is gone (deleted, or the server's store was reset)";
  return undefined;
};

/**
 * Writes the lost job's end: onto its record, or, when the record went with
 * the store, as a new record (what the job was, failed, with the reason), so
 * that `get()` anywhere says how it ended. Resolves with the record as stored
 * (another end, written first, stands).
 */
export const recordLost = async (
  broker: JobRecords,
  record: JobRecord,
  counts: JobCounts,
  reason: string,
  now: number,
): Promise<JobRecord> => {
  const ended = (r: JobRecord): JobRecord => ({
    ...r,
    status: "failed",
    phase: SubmitPhase.committed,
    counts: maxCounts(r.counts, counts),
    reason,
    updatedAt: now,
    finishedAt: now,
  });
  const updated = await updateRecordWith(broker, record.id, (r) =>
    isFinal(r.status) ? undefined : ended(r),
  );
  if (updated) return updated;
  const remade = ended({ ...record, counts: { done: 0, failed: 0, dead: 0 } });
  try {
    await broker.createRecord(remade);
    return remade;
  } catch (error) {
    // Made again meanwhile (another runtime recorded the loss): its end stands.
    if (!(error instanceof RevisionConflict)) throw error;
    const found = await broker.getRecord(record.id);
    if (!found) throw error;
    return found.record;
  }
};
