/**
 * A delayed job whose end could not remove its held tasks (its clean-up
 * failed: the broker not answering): the cleanup pass removes them, on both
 * brokers. Before, the pass did not read the delayed streams: once no
 * runtime followed the queue (no live delayed job of it), the held tasks
 * stayed on the server for good. The oracles: the queue's delayed and tasks
 * streams read raw (the memory server's, or a nats.js client of the test's
 * own), and the handlers' ledger.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FaultBench, memoryBench, natsBench } from "../harness/fault-runtimes.ts";

describe.each([
  { name: "memory", make: memoryBench },
  { name: "nats", make: natsBench },
])("held tasks of a job whose end did not remove them, on $name", ({ make }) => {
  let bench: FaultBench;
  beforeAll(async () => {
    bench = await make();
  });
  afterAll(async () => {
    await bench?.dispose();
  });

  it("the cleanup pass removes them, a live job's stay, and none of them runs", async () => {
    const queue = "held-left";
    const { rt, faults } = await bench.runtime();
    const handled: string[] = [];
    const worker = rt.workers.start<number, number>({
      queue,
      handler: (task) => {
        handled.push(task.jobId);
        return task.payload;
      },
    });
    // Due in 3 s: the pass below runs well before, so only it can have removed them (a mover
    // drops a held task of a job over once it is due, when one follows the queue).
    const runAt = Date.now() + 3_000;
    const doomed = await rt.jobs.submit({ queue, tasks: [1, 2, 3], runAt });
    const live = await rt.jobs.submit({ queue, tasks: [4], delayMs: 3_600_000 });
    expect(await bench.rawHeld(queue, doomed.id)).toBe(3);
    // Its cancel writes its end, then its clean-up fails (the broker not answering): the cancel
    // stands (cancel-cleanup-failed.both.test.ts).
    faults.fail("removeTasks", Number.POSITIVE_INFINITY, doomed.id);
    await expect(doomed.cancel("not needed")).resolves.toMatchObject({ status: "failed" });
    expect(faults.injected("removeTasks")).toBeGreaterThan(0);
    expect(await rt.jobs.record(doomed.id)).toMatchObject({ status: "failed", phase: "committed" });
    expect(await bench.rawHeld(queue, doomed.id)).toBe(3);

    const report = await rt.admin.cleanup();
    expect(await bench.rawHeld(queue, doomed.id)).toBe(0);
    expect(await bench.rawHeld(queue, live.id)).toBe(1);
    expect(report.tasksPurged).toContain(`jetstate.delayed.${queue}.${doomed.id}`);
    expect(report.tasksPurged.filter((subject) => subject.endsWith(live.id))).toEqual([]);
    expect(Date.now(), "the pass ran before the doomed tasks were due").toBeLessThan(runAt);

    // A job due after the doomed one's time: once it ran, the doomed one's tasks were due too.
    const control = await rt.jobs.submit({ queue, tasks: [5], runAt: runAt + 200 });
    expect(await control.done()).toMatchObject({ status: "succeeded" });
    await worker.stop();
    expect(handled).toEqual([control.id]);
    expect(await bench.rawHeld(queue, doomed.id)).toBe(0);
    expect(await bench.rawTasks(queue, doomed.id)).toBe(0);
    expect(await bench.rawHeld(queue, live.id)).toBe(1);
  });
});
