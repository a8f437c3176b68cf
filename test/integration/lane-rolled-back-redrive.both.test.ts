import { describe, expect, it } from "vitest";
import { memoryBench, natsBench, useFaultBench } from "../harness/fault-runtimes.ts";
import { gate, waitUntil } from "../harness/wait.ts";

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

const BOUND_MS = 15_000;

describe.each([
  ["memory", memoryBench],
  ["nats", natsBench],
] as const)("a rolled-back lane submit redriven on the %s broker", (_kind, makeBench) => {
  const use = useFaultBench(makeBench);

  it("its task died before the rollback's mark: a redrive of the rolled-back job is refused, its record never reopened", async () => {
    const submitter = await use.runtime();
    const runner = await use.runtime();
    const queue = "stale-redrive";
    /** Every run of the job's task: `old` while the first submit stood, `new` after. */
    const runs: Array<"old" | "new"> = [];
    let era: "old" | "new" = "old";
    const held = gate();
    const w = runner.rt.workers.start<string, string>({
      queue,
      concurrency: 4,
      stopTimeoutMs: 2000,
      handler: async (task) => {
        if (task.payload === "prime") return "primed";
        runs.push(era);
        if (era === "old") throw new Error("fails while the first submit stands");
        await held.opened;
        return "ok";
      },
    });
    use.after(async () => {
      held.open();
      await w.stop();
    });
    // A first lane job of the queue: the worker pulls the lane from then on.
    await (await submitter.rt.jobs.submit({ queue, tasks: ["prime"] })).done();

    const request = { queue, tasks: ["t"], idempotencyKey: "stale-redrive-1", backoff: [0] };
    let landed = false;
    // The late publish lands once the submitter found nothing stored, before its mark: the
    // worker reads the record still naming that submit, runs the task and it dies (5 deliveries).
    submitter.faults.before("rollBack", async (jobId) => {
      if (landed) return;
      landed = true;
      await submitter.faults.land();
      await waitUntil(async () => (await use.bench.rawResults(queue, jobId)).some((e) => e.dead === true), {
        timeoutMs: BOUND_MS,
        message: () => `the late task to die (runs ${JSON.stringify(runs)})`,
      });
    });
    submitter.faults.strand();
    await expect(submitter.rt.jobs.submit(request)).rejects.toThrow(/injected fault: publishTasks/);
    const { jobs } = await submitter.rt.jobs.list({ queue });
    const rolledBack = jobs.find((j) => j.phase === "rolledBack");
    expect(rolledBack).toMatchObject({ status: "failed", phase: "rolledBack", lane: true, total: 1 });
    const jobId = rolledBack!.id;
    expect(runs).toEqual(["old", "old", "old", "old", "old"]);
    // What the server holds of the rolled-back submit: its task's dead answer.
    expect((await use.bench.rawResults(queue, jobId)).map((e) => [e.i, e.dead])).toEqual([[0, true]]);

    // Rolled back: nothing of it may run again. A redrive of the job is refused.
    era = "new";
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
