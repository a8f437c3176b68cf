import { expect, it } from "vitest";
import { describeOnBothBenches } from "../harness/fault-runtimes.ts";
import { lateDeathRolledBack } from "../harness/lane-late-death.ts";

/**
 * A 1-task lane job's task publish that lands once its submitter found
 * nothing stored, before its rollback's mark: a worker runs it under the
 * rolled-back submit (the window the change leaves) and it dies there, its
 * dead letter and dead answer stored. The submit is rolled back: nothing of
 * it may run again, a redrive of its job included. The oracles: the
 * handler's own ledger (each run before or after the rollback), the
 * results the server holds, read raw, and the record as stored, read by a
 * runtime that kept nothing of the job.
 */

describeOnBothBenches("a rolled-back lane submit redriven on the %s broker", (use) => {
  it("its task died before the rollback's mark: a redrive of the rolled-back job is refused, its record never reopened", async () => {
    const { submitter, jobId, runs, renew } = await lateDeathRolledBack(use, "stale-redrive");

    // Rolled back: nothing of it may run again. A redrive of the job is refused.
    renew();
    const redrive = await submitter.rt.jobs.redrive(jobId).then(
      () => "redriven",
      (error: { message: string }) => error.message,
    );
    // The record as stored, read by a runtime that kept nothing of the job.
    const reader = await use.runtime();
    const stored = await reader.rt.jobs.record(jobId);
    expect({ redrive, status: stored?.status, phase: stored?.phase }).toEqual({
      redrive: expect.not.stringMatching(/^redriven$/),
      status: "failed",
      phase: "rolledBack",
    });
    expect(runs.filter((r) => r === "new")).toEqual([]);
  });
});
