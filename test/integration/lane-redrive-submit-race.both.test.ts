import { expect, it } from "vitest";
import { describeOnBothBenches } from "../harness/fault-runtimes.ts";
import { redriveHeld } from "../harness/lane-redrive-held.ts";
import { waitUntil } from "../harness/wait.ts";

/**
 * A redrive of a 1-task lane job that read the job while its submit stood
 * (its late task died under it, before its rollback's mark), held between
 * that read and its record write; meanwhile the submit is rolled back, and
 * (second case) the key submitted again. Nothing of the rolled-back submit
 * may run or count for the next one: the redrive is refused at its write
 * as it is at its read (`InvalidArgument` naming `id`). The oracles: the
 * handler's own ledger (each run before or after the rollback), the tasks
 * and results the server holds, read raw, and the record as stored, read
 * by a runtime that kept nothing of the job.
 */

const BOUND_MS = 15_000;

describeOnBothBenches("a lane redrive across its submit's rollback on the %s broker", (use) => {
  it("rolled back between the redrive's read and its write: refused, nothing of it stored for the next submit of the key", async () => {
    const queue = "race-rolled-back";
    const { submitter, jobId, request, runs, held, renew, release } = await redriveHeld(
      use,
      queue,
      "publishResults",
    );
    renew();
    // Refused as a redrive that read it rolled back is.
    expect(await release()).toEqual({
      _tag: "InvalidArgument",
      field: "id",
      message: expect.stringMatching(/submit was rolled back/),
    });
    const reader = await use.runtime();
    expect(await reader.rt.jobs.record(jobId)).toMatchObject({ status: "failed", phase: "rolledBack" });
    // Every answer stored names a submit: one that names none is the record's, whichever submit holds it.
    const old = (await use.bench.rawResults(queue, jobId)).filter((e) => e.redrive !== true);
    expect(old.map((e) => [e.i, e.dead, typeof e.s])).toEqual(old.map(() => [0, true, "string"]));

    // The key again: its task runs once and answers; the job counts its own answer only.
    const job = await submitter.rt.jobs.submit(request);
    held.open();
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1, dead: 0 });
    const read: unknown[] = [];
    for await (const r of job.results()) read.push([r.index, r.ok]);
    expect(read).toEqual([[0, true]]);
    expect(runs.filter((r) => r === "new")).toEqual(["new"]);
  });

  it("the key submitted again between the redrive's read and its write: refused, the new submit's job neither reopened nor its task run twice", async () => {
    const queue = "race-resubmit";
    const { jobId, runs, held, submitAgain, release } = await redriveHeld(use, queue, "publishResults");
    const job = await submitAgain();

    expect(await release()).toEqual({
      _tag: "InvalidArgument",
      field: "id",
      message: expect.stringMatching(/submitted again/),
    });
    // Its own task, held by the worker, is all the job has stored: no copy of the old one.
    expect(await use.bench.rawTasks(queue, jobId)).toBe(1);
    const reader = await use.runtime();
    const stored = await reader.rt.jobs.record(jobId);
    expect(stored?.redrive).toBeUndefined();

    held.open();
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1, dead: 0 });
    expect(runs.filter((r) => r === "new")).toEqual(["new"]);
  });

  it("rolled back between the redrive's record write and its publish, the key submitted again: the old task's copy never runs for the new submit", async () => {
    const queue = "race-published";
    const { jobId, runs, held, submitAgain, release } = await redriveHeld(use, queue, "publishTasks");
    const job = await submitAgain();

    // Its record written before the mark, the redrive publishes its copy now.
    await release();
    // Its own task, held by the worker, is all the job keeps: the copy is dropped, not run.
    await waitUntil(async () => (await use.bench.rawTasks(queue, jobId)) === 1, {
      timeoutMs: BOUND_MS,
      message: () => `the copy to be dropped (runs ${JSON.stringify(runs)})`,
    });
    expect(runs.filter((r) => r === "new")).toEqual(["new"]);

    held.open();
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1, dead: 0 });
    expect(runs.filter((r) => r === "new")).toEqual(["new"]);
  });
});
