import { expect, it } from "vitest";
import { describeOnBothBenches } from "../harness/fault-runtimes.ts";
import { lateDeathRolledBack } from "../harness/lane-late-death.ts";

/**
 * A 1-task lane job's task publish that lands once its submitter found
 * nothing stored, before its rollback's mark: a worker runs it under the
 * rolled-back submit (the window the change leaves) and it dies there, its
 * dead letter stored. The next submit of the key runs its own task, which
 * never dies: nothing of the rolled-back submit may stand for it, its
 * dead letter included. The oracles: the handler's own ledger (which
 * submit's delivery each run was: before or after the rollback) and the
 * results the server holds, read raw.
 */

describeOnBothBenches("a rolled-back lane submit's dead letter on the %s broker", (use) => {
  it("its task died before the rollback's mark: the next submit of the key, never dead, has no dead letter to redrive", async () => {
    const { submitter, jobId, runs, held, submitAgain } = await lateDeathRolledBack(use, "stale-dead");

    // The key again: its own task runs, held, never failing.
    const job = await submitAgain();

    // Its task never died: no dead letter is its, and a redrive has nothing to send.
    const letters = await submitter.rt.jobs.deadLetters(jobId);
    const redrive = await submitter.rt.jobs.redrive(jobId).then(
      () => "redriven: its task sent again while its own delivery runs",
      (error: { message: string }) => error.message,
    );
    expect({ letters: letters.map((l) => [l.index, l.error]), redrive }).toEqual({
      letters: [],
      redrive: expect.stringMatching(/no dead letter/),
    });

    held.open();
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1, dead: 0 });
    // Run once under the new submit.
    expect(runs.filter((r) => r === "new")).toEqual(["new"]);
  });
});
