/**
 * A guard for any fix of the late marker (architecture.md, "Redrive": a
 * marker that lands after the copy another redrive sent died again). A
 * version that sent such a task under the id of all its letters was
 * reverted: it ran this case's task twice (found by a review).
 *
 * Redrive B = [0, 1] reads the letters (task 0's first: L0a), then waits at
 * its markers. Redrive A = [0] sends task 0 back under `0.hash(L0a)`; that
 * copy dies again (letter L0b). An operator redrives [0] again (C): C reads
 * L0b and waits at its markers. B's markers land first: B's takes back the
 * copy's death. C's marker, later, takes nothing back, and C sends task 0
 * under `0.hash(L0b)`. B's task 0 must not be a second copy: under A's id
 * the server keeps it once, and only C's copy runs (under `0.hash(L0a,
 * L0b)`, the reverted version's, it ran twice). Oracles: the tasks stored
 * raw while every answer is held, and the handler's ledger.
 */
import { describe, expect, it } from "vitest";
import { holdMarkers, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a third redrive of task 0 made while a late marker is held, on %s", (_k, makeSide) => {
  it("task 0 is stored and run once more, not twice", { timeout: 60_000 }, async () => {
    const side = await makeSide();
    const holdB = holdMarkers();
    const holdC = holdMarkers();
    const answer = gate();
    const a = await side.runtime("a");
    const b = await side.runtime("b", holdB.wrap, false);
    const c = await side.runtime("c", holdC.wrap, false);
    const queue = "late-marker-third";
    let down = true;
    const ran: Array<[number, "threw" | "ok"]> = [];
    const worker = a.workers.start<number, number>({
      queue,
      concurrency: 4,
      handler: async (task) => {
        if (down) {
          ran.push([task.index, "threw"]);
          throw new Error("upstream down");
        }
        await answer.opened;
        ran.push([task.index, "ok"]);
        return task.payload * 2;
      },
    });
    try {
      const job = await submitDying(a, queue, { tasks: [1, 2, 3] });
      expect(await job.done()).toMatchObject({ status: "failed", dead: 3 });
      const big = b.jobs.redrive(job.id, [0, 1]);
      await holdB.reached.opened;
      await a.jobs.redrive(job.id, [0]);
      await waitUntil(async () => (await side.stored(job.id))?.status === "failed", {
        timeoutMs: 20_000,
        message: "task 0's copy died again and the job ended again",
      });
      expect(ran.filter(([i]) => i === 0)).toEqual([
        [0, "threw"],
        [0, "threw"],
      ]);
      // The operator redrives the task that died again: C reads its new letter, waits at its marker.
      const third = c.jobs.redrive(job.id, [0]);
      await holdC.reached.opened;
      down = false;
      // B's markers land first, then C's.
      holdB.held.open();
      await big;
      holdC.held.open();
      await third;
      // Every answer held: what is stored is every copy sent. Tasks 0 and 1, once each.
      expect(await side.storedTasks(queue, job.id)).toBe(2);
      answer.open();
      await waitUntil(async () => (await side.stored(job.id))?.status === "failed", {
        timeoutMs: 20_000,
        message: "the job over, task 2 dead still",
      });
      await waitUntil(async () => (await side.storedTasks(queue, job.id)) === 0, {
        timeoutMs: 10_000,
        message: "no task of the job left stored",
      });
      expect(ran.filter(([i]) => i === 0)).toEqual([
        [0, "threw"],
        [0, "threw"],
        [0, "ok"],
      ]);
      expect(await side.stored(job.id)).toMatchObject({ counts: { done: 2, failed: 0, dead: 1 } });
    } finally {
      holdB.held.open();
      holdC.held.open();
      answer.open();
      await worker.stop();
      await c.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
