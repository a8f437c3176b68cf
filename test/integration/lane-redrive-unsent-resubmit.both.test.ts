import { describe, expect, it } from "vitest";
import { type FaultBenchUse, memoryBench, natsBench, useFaultBench } from "../harness/fault-runtimes.ts";
import { lateDeathRolledBack } from "../harness/lane-late-death.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

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

const redriveHeldBeforePublish = async (use: FaultBenchUse, queue: string) => {
  const redriver = await use.runtime();
  const reached = gate();
  const held = gate();
  let redrive: Promise<unknown> | undefined;
  const death = await lateDeathRolledBack(use, queue, async (jobId) => {
    let holding = true;
    redriver.faults.before("publishTasks", async (of) => {
      if (of !== jobId || !holding) return;
      holding = false;
      reached.open();
      await held.opened;
    });
    redrive = redriver.rt.jobs.redrive(jobId).then(
      () => "redriven",
      (error: { _tag?: string; message?: string }) => ({ _tag: error._tag, message: error.message }),
    );
    await reached.opened;
  });
  use.after(async () => {
    held.open();
    await redrive;
  });
  return {
    ...death,
    /** Lets the redrive go on, its copy's publish failing. */
    releaseFailing: () => {
      redriver.faults.fail("publishTasks", 1, death.jobId);
      held.open();
      return redrive!;
    },
  };
};

describe.each([
  ["memory", memoryBench],
  ["nats", natsBench],
] as const)("a lane redrive not sent across its submit's rollback on the %s broker", (_kind, makeBench) => {
  const use = useFaultBench(makeBench);

  it("its copy's publish failing once the key was submitted again: nothing of it counts for the new submit's job", async () => {
    const queue = "race-unsent";
    const { submitter, jobId, request, runs, held, renew, releaseFailing } = await redriveHeldBeforePublish(
      use,
      queue,
    );
    renew();
    const job = await submitter.rt.jobs.submit(request);
    expect(job.id).toBe(jobId);
    await waitUntil(() => runs.includes("new"), {
      timeoutMs: BOUND_MS,
      message: "the new submit's task to run",
    });
    const submit = (await submitter.rt.jobs.record(jobId))?.submitId;
    const before = (await use.bench.rawResults(queue, jobId)).length;

    // The old redrive goes on, its copy not published: it fails, refused for its submit.
    expect(await releaseFailing()).toMatchObject({
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
    const { submitter, jobId, request, runs, held, renew, releaseFailing } = await redriveHeldBeforePublish(
      use,
      queue,
    );
    // Rolled back only: the old redrive goes on, its copy not published: refused for its submit.
    expect(await releaseFailing()).toMatchObject({
      _tag: "InvalidArgument",
      message: expect.stringMatching(/not published/),
    });

    renew();
    const job = await submitter.rt.jobs.submit(request);
    expect(job.id).toBe(jobId);
    await waitUntil(() => runs.includes("new"), {
      timeoutMs: BOUND_MS,
      message: "the new submit's task to run",
    });
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
