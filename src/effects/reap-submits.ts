import type { JobPort } from "../adapters/job-port.ts";
import { RevisionConflict } from "../kernel/errors.ts";
import { type JobRecord, SubmitPhase } from "../kernel/job-record.ts";
import { rollBack } from "./submit-job.ts";

export interface ReapReport {
  /** Submits that died before their commit point: tasks purged, record failed. */
  readonly rolledBack: readonly string[];
  /** Submits that died after the consumer existed: the commit stands, the record says running. */
  readonly rolledForward: readonly string[];
}

/**
 * Finishes the submits that did not finish themselves. The consumer is the
 * commit point: a submit whose consumer exists is rolled forward, any other
 * is rolled back. It only touches records whose commit deadline passed by
 * `graceMs`, and a submitter checks that deadline before it commits, so the
 * two never undo each other's work.
 */
export const reapSubmits = async (
  port: JobPort,
  now: () => number,
  graceMs: number,
  records?: readonly JobRecord[],
): Promise<ReapReport> => {
  const rolledBack: string[] = [];
  const rolledForward: string[] = [];
  for (const record of records ?? (await port.listRecords())) {
    if (record.phase !== SubmitPhase.submitting || now() < record.commitDeadline + graceMs) continue;
    if (await port.consumerExists(record.queue, record.id)) {
      const found = await port.getRecord(record.id);
      if (!found || found.record.phase !== SubmitPhase.submitting) continue;
      try {
        await port.updateRecord(
          { ...found.record, phase: SubmitPhase.committed, status: "running", updatedAt: now() },
          found.revision,
        );
        rolledForward.push(record.id);
      } catch (error) {
        if (!(error instanceof RevisionConflict)) throw error;
      }
    } else {
      await rollBack(
        port,
        record,
        "submit did not commit before its deadline (rolled back by the reaper)",
        now,
      );
      rolledBack.push(record.id);
    }
  }
  return { rolledBack, rolledForward };
};
