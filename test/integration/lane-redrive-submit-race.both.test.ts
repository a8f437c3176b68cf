import { describe, expect, it } from "vitest";
import { type FaultBenchUse, memoryBench, natsBench, useFaultBench } from "../harness/fault-runtimes.ts";
import { lateDeathRolledBack } from "../harness/lane-late-death.ts";
import { gate, waitUntil } from "../harness/wait.ts";

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

/**
 * The late death of `lateDeathRolledBack`, with a redrive from a runtime of its own started
 * once the task died, before the rollback's mark, and held until `release` before its first
 * results publish (`publishResults`, its markers: after its reads, before its record write)
 * or before its task's publish (`publishTasks`: after its record write).
 */
const redriveHeldAcrossRollback = async (
  use: FaultBenchUse,
  queue: string,
  at: "publishResults" | "publishTasks" = "publishResults",
) => {
  const redriver = await use.runtime();
  const reached = gate();
  const held = gate();
  let redrive: Promise<unknown> | undefined;
  const death = await lateDeathRolledBack(use, queue, async (jobId) => {
    let holding = true;
    redriver.faults.before(at, async (of) => {
      if (of !== jobId || !holding) return;
      holding = false;
      reached.open();
      await held.opened;
    });
    redrive = redriver.rt.jobs.redrive(jobId).then(
      () => "redriven",
      (error: { _tag?: string; field?: string; message?: string }) => ({
        _tag: error._tag,
        field: error.field,
        message: error.message,
      }),
    );
    await reached.opened;
  });
  // The redrive is held past its reads, the record rolled back.
  const release = () => {
    held.open();
    return redrive!;
  };
  use.after(async () => {
    held.open();
    await redrive;
  });
  return { ...death, release };
};

describe.each([
  ["memory", memoryBench],
  ["nats", natsBench],
] as const)("a lane redrive across its submit's rollback on the %s broker", (_kind, makeBench) => {
  const use = useFaultBench(makeBench);

  it("rolled back between the redrive's read and its write: refused, nothing of it stored for the next submit of the key", async () => {
    const queue = "race-rolled-back";
    const { submitter, jobId, request, runs, held, renew, release } = await redriveHeldAcrossRollback(
      use,
      queue,
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
    const { submitter, jobId, request, runs, held, renew, release } = await redriveHeldAcrossRollback(
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
    const { submitter, jobId, request, runs, held, renew, release } = await redriveHeldAcrossRollback(
      use,
      queue,
      "publishTasks",
    );
    renew();
    const job = await submitter.rt.jobs.submit(request);
    await waitUntil(() => runs.includes("new"), {
      timeoutMs: BOUND_MS,
      message: "the new submit's task to run",
    });

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
