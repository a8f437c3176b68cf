/**
 * The late marker (architecture.md, "Redrive"): two redrives of task 0 at
 * once, B = [0, 1] and A = [0]. B reads the letters (task 0's first, L0a)
 * and waits at its markers; A sends task 0 back under `0.hash(L0a)` and
 * that copy dies again (a new letter, L0b, and its dead answer). B's
 * markers land only then. B's task 0 goes under A's id, kept once by the
 * server: no copy of task 0 follows B's marker. B's marker sends back L0a,
 * not L0b, so it must not take back the death of L0b: taken back, the job
 * waited for task 0, which nobody would run, until it stalled. The job must
 * end counting task 0 dead, its letter there, and a redrive of that letter
 * runs it; B's record write lowers `dead` by task 1 only (its marker took
 * back nothing of task 0). Oracles: the handler's ledger, the record as the
 * server stores it and as B's broker wrote it, the letters, the tasks the
 * server holds.
 */
import { describe, expect, it } from "vitest";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { flakyWorker, holdMarkers, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a redrive's marker landing after the copy another redrive sent died, on %s", (_k, makeSide) => {
  it("the job ends counting the task dead, its letter there to redrive", { timeout: 60_000 }, async () => {
    const side = await makeSide();
    const holdB = holdMarkers();
    const a = await side.runtime("a");
    /** The dead count of each record write B's broker made. */
    const bWrote: number[] = [];
    const b = await side.runtime(
      "b",
      (inner) =>
        spiedBroker(holdB.wrap(inner), (name, _n, args, call) => {
          if (name !== "updateRecord") return call();
          return (call() as Promise<unknown>).then((v) => {
            bWrote.push((args[0] as JobRecord).counts.dead);
            return v;
          });
        }).broker,
      false,
    );
    const queue = "late-marker-stall";
    // Every task throws until the upstream is mended.
    const flaky = flakyWorker(a, queue, { dying: "every", concurrency: 4 });
    const { ran } = flaky;
    const worker = flaky.start();
    const runsOf = (index: number) => ran.filter(([i]) => i === index).map(([, r]) => r);
    try {
      const job = await submitDying(a, queue, { tasks: [1, 2, 3] });
      expect(await job.done()).toMatchObject({ status: "failed", dead: 3 });
      // B reads the letters, then waits at its markers.
      const big = b.jobs.redrive(job.id, [0, 1]);
      await holdB.reached.opened;
      await a.jobs.redrive(job.id, [0]);
      await waitUntil(
        async () => (await side.stored(job.id))?.status === "failed" && runsOf(0).length === 2,
        { timeoutMs: 20_000, message: "A's copy of task 0 died and the job ended again" },
      );
      expect((await a.jobs.deadLetters(job.id)).map((l) => l.index)).toEqual([0, 1, 2]);
      // B's markers land after that death; task 1 runs and answers.
      flaky.mend();
      holdB.held.open();
      await big;
      await waitUntil(() => runsOf(1).includes("ok"), {
        timeoutMs: 20_000,
        message: "B's copy of task 1 ran",
      });
      let seen: unknown;
      await waitUntil(
        async () => {
          const stored = await side.stored(job.id);
          seen = { stored, ran, tasksStored: await side.storedTasks(queue, job.id) };
          return stored?.status === "failed" || stored?.status === "succeeded";
        },
        {
          timeoutMs: 15_000,
          message: () => `the job over again, not waiting for task 0: ${JSON.stringify(seen)}`,
        },
      );
      // Task 0 ran twice, both throwing: nothing of it is left to run, and the job counts it dead.
      expect(runsOf(0)).toEqual(["threw", "threw"]);
      expect(runsOf(1)).toEqual(["threw", "ok"]);
      expect(runsOf(2)).toEqual(["threw"]);
      expect(await side.storedTasks(queue, job.id)).toBe(0);
      expect(await side.stored(job.id)).toMatchObject({
        status: "failed",
        counts: { done: 1, failed: 0, dead: 2 },
      });
      const letters = await a.jobs.deadLetters(job.id);
      expect(letters.map((l) => l.index)).toEqual([0, 2]);
      // B wrote over the record of the job over again (3 dead): task 1 taken back, not task 0.
      expect(bWrote).toEqual([2]);
      // Its results as read from the stream (results()): task 0's death is one of them.
      const read: Array<[number, string]> = [];
      for await (const r of (await a.jobs.get(job.id))!.results())
        read.push([r.index, r.ok ? "ok" : r.dead ? "dead" : "failed"]);
      expect(read.sort()).toEqual([
        [0, "dead"],
        [1, "ok"],
        [2, "dead"],
      ]);
      // Task 0's letter is there to redrive: it runs, and the job counts its answer.
      await a.jobs.redrive(job.id, [0]);
      await waitUntil(
        async () => runsOf(0).includes("ok") && (await side.stored(job.id))?.status === "failed",
        { timeoutMs: 20_000, message: "task 0 redriven from its letter, and the job over again" },
      );
      expect(runsOf(0)).toEqual(["threw", "threw", "ok"]);
      expect(await side.stored(job.id)).toMatchObject({
        status: "failed",
        counts: { done: 2, failed: 0, dead: 1 },
      });
      expect((await a.jobs.deadLetters(job.id)).map((l) => l.index)).toEqual([2]);
    } finally {
      holdB.held.open();
      await worker.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
