import { expect, it } from "vitest";
import { describeOnBothBenches } from "../harness/fault-runtimes.ts";
import { redriveHeld } from "../harness/lane-redrive-held.ts";
import { within } from "../harness/wait.ts";

/**
 * A redrive of a 1-task lane job whose record write landed while the submit
 * stood (its late task dead), held before its copy's publish while the
 * submit is rolled back and the key submitted again
 * (lane-redrive-submit-race's third case), whose publish then fails (the
 * server not answering). A refused redrive "takes nothing back" because a
 * death stored again names no submit and the next submit of the key counts
 * it (architecture.md, "A lane job of one task"); a redrive not sent stored
 * them all the same (`redriveNotSent`), and now refuses as its record write
 * does (`InvalidArgument`). The oracles: the handler's ledger (the new
 * submit's task runs once and succeeds) and the results the server holds,
 * read raw.
 */

const BOUND_MS = 15_000;

describeOnBothBenches("a lane redrive not sent across its submit's rollback on the %s broker", (use) => {
  it("its copy's publish failing once the key was submitted again: nothing of it counts for the new submit's job", async () => {
    const queue = "race-unsent";
    const { submitter, jobId, runs, held, submitAgain, release } = await redriveHeld(
      use,
      queue,
      "publishTasks",
    );
    const job = await submitAgain();
    const submit = (await submitter.rt.jobs.record(jobId))?.submitId;
    const before = (await use.bench.rawResults(queue, jobId)).length;

    // The old redrive goes on, its copy not published: it fails, refused for its submit.
    expect(await release({ publishFails: true })).toMatchObject({
      _tag: "InvalidArgument",
      message: expect.stringMatching(/not published/),
    });
    // What it stored for the job since: nothing naming no submit but its markers (the new
    // submit's task is held by the worker, unanswered).
    const since = (await use.bench.rawResults(queue, jobId)).slice(before);

    held.open();
    const ended = await within(job.done(), BOUND_MS);
    const stored = await submitter.rt.jobs.record(jobId);
    expect([ended, stored?.counts, runs.filter((r) => r === "new")]).toEqual([
      expect.objectContaining({ status: "succeeded", done: 1, dead: 0 }),
      { done: 1, failed: 0, dead: 0 },
      ["new"],
    ]);
    expect(since.filter((e) => e.redrive !== true && e.s !== submit)).toEqual([]);
  });

  it("its copy's publish failing once the submit was rolled back: nothing of it counts for the next submit of the key", async () => {
    const queue = "race-unsent-rolled-back";
    const { submitter, jobId, runs, held, submitAgain, release } = await redriveHeld(
      use,
      queue,
      "publishTasks",
    );
    // Rolled back only: the old redrive goes on, its copy not published: refused for its submit.
    expect(await release({ publishFails: true })).toMatchObject({
      _tag: "InvalidArgument",
      message: expect.stringMatching(/not published/),
    });

    const job = await submitAgain();
    held.open();
    const ended = await within(job.done(), BOUND_MS);
    const stored = await submitter.rt.jobs.record(jobId);
    // Its results as a runtime that kept nothing of the job reads them (a takeover, a reader).
    const reader = await use.runtime();
    const handle = await reader.rt.jobs.get(jobId);
    const read: unknown[] = [];
    const reading = (async () => {
      for await (const r of handle!.results()) read.push([r.index, r.ok]);
    })();
    expect(await within(reading, BOUND_MS)).not.toBe("never");
    expect([ended, stored?.counts, read, runs.filter((r) => r === "new")]).toEqual([
      expect.objectContaining({ status: "succeeded", done: 1, dead: 0 }),
      { done: 1, failed: 0, dead: 0 },
      [[0, true]],
      ["new"],
    ]);
  });
});
