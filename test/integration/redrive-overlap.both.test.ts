/**
 * Two redrives of one job made at once with different task sets, its three
 * tasks dead: `redrive(id, [0])` and `redrive(id, [0, 1])`. A redrive's
 * message ids derived from the letters of every task it sent back, so the
 * two sets published task 0 under two ids: it was stored twice and ran
 * twice. And the second record write lowered `dead` by its whole set: task
 * 0 was counted off twice (the record said 0 dead, with task 2's letter
 * there). Each dead task must run once, the counts be exact, the job end
 * once.
 * Runtime A runs the job and the worker; runtime B makes both redrives,
 * held together once both have read the letters (their consumer's make,
 * the step after). The oracles: the handler's own ledger of runs, the
 * tasks and the record as the server stores them, the dead letters.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

/** A worker whose every task throws until `mend()`, then answers once `answer` opens; `ran` is its ledger. */
const downWorker = (runtime: Runtime, queue: string, answer: Promise<void>) => {
  let down = true;
  const ran: Array<[number, "ok" | "threw"]> = [];
  const worker = runtime.workers.start<number, number>({
    queue,
    concurrency: 4,
    handler: async (task) => {
      if (down) {
        ran.push([task.index, "threw"]);
        throw new Error("upstream down");
      }
      await answer;
      ran.push([task.index, "ok"]);
      return task.payload * 2;
    },
  });
  return {
    worker,
    ran,
    mend: () => {
      down = false;
    },
  };
};

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("two redrives of one job at once, with different task sets, on %s", (_kind, makeSide) => {
  it("run each dead task once, and the job ends with exact counts", { timeout: 40_000 }, async () => {
    const side = await makeSide();
    const answer = gate();
    const together = gate();
    let holding = false;
    let arrived = 0;
    const holdTogether = (inner: Broker) =>
      spiedBroker(inner, (name, _n, _args, call) => {
        if (name !== "createConsumer" || !holding) return call();
        if (++arrived === 2) together.open();
        return together.opened.then(call);
      }).broker;
    const a = await side.runtime("a");
    const b = await side.runtime("b", holdTogether);
    const queue = "overlap";
    const down = downWorker(a, queue, answer.opened);
    try {
      const job = await submitDying(a, queue, { tasks: [1, 2, 3] });
      expect(await job.done()).toMatchObject({ status: "failed", dead: 3 });
      down.mend();
      holding = true;
      await Promise.all([b.jobs.redrive(job.id, [0]), b.jobs.redrive(job.id, [0, 1])]);
      expect(arrived).toBe(2);
      // Tasks 0 and 1 sent back, task 2 dead still. Before the fix: 0.
      expect(await side.stored(job.id)).toMatchObject({ status: "running", counts: { dead: 1 } });
      // Both redrives over, every copy still stored (the handler holds its answers): one per task.
      // Before the fix task 0 was stored twice, once under each redrive's ids.
      expect(await side.storedTasks(queue, job.id)).toBe(2);
      answer.open();
      await waitUntil(async () => (await side.stored(job.id))?.status === "failed", {
        timeoutMs: 20_000,
        message: "the job, tasks 0 and 1 redriven and task 2 dead still, over",
      });
      expect(await side.stored(job.id)).toMatchObject({ counts: { done: 2, failed: 0, dead: 1 } });
      expect((await a.jobs.deadLetters(job.id)).map((l) => l.index)).toEqual([2]);
      await waitUntil(async () => (await side.storedTasks(queue, job.id)) === 0, {
        timeoutMs: 10_000,
        message: "no task of the job left stored",
      });
      await down.worker.stop();
      // Each task died once, then ran once.
      expect(down.ran.filter(([i]) => i === 0)).toEqual([
        [0, "threw"],
        [0, "ok"],
      ]);
      expect(down.ran.filter(([i]) => i === 1)).toEqual([
        [1, "threw"],
        [1, "ok"],
      ]);
      expect(down.ran.filter(([i]) => i === 2)).toEqual([[2, "threw"]]);
    } finally {
      answer.open();
      together.open();
      await down.worker.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
