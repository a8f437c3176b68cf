/**
 * A guard for any fix of the late marker (architecture.md, "Redrive"). A
 * version that, once its record was written, listed the letters again and
 * sent back under a new id a task its marker took back that had a letter
 * it had not read (removing that letter) was reverted: that letter may be
 * of a death stored after its marker, which is counted (no marker follows
 * it). The task went again, its answer not counted, and the job ended
 * counting it dead with no letter to redrive it by (found by a review).
 * Redrive B = [0, 1] reads task 0's first letter and waits at its markers;
 * A = [0] sends task 0 back, the copy dies; C = [0] reads that letter and
 * waits at its markers. B's markers land (B's takes back the copy's death)
 * and B writes its record, then waits at its second listing (held only
 * when it makes one). C's marker lands (takes nothing back), C sends task 0
 * back, that copy dies too: a death after B's marker, counted. The job's
 * dead count must match its letters. Oracles: the record as the server
 * stores it, the letters, the handler's ledger.
 */
import { describe, expect, it } from "vitest";
import { flakyWorker, holdMarkers, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)(
  "a death stored after a late marker, before its redrive lists the letters again, on %s",
  (_k, makeSide) => {
    it("a task the job counts dead keeps its letter", { timeout: 60_000 }, async () => {
      const side = await makeSide();
      const holdB = holdMarkers(true);
      const holdC = holdMarkers();
      const a = await side.runtime("a");
      const b = await side.runtime("b", holdB.wrap, false);
      const c = await side.runtime("c", holdC.wrap, false);
      const queue = "late-letter";
      // Every task throws until the upstream is mended.
      const flaky = flakyWorker(a, queue, { dying: "every", concurrency: 4 });
      const { ran } = flaky;
      const worker = flaky.start();
      const threw0 = () => ran.filter(([i, r]) => i === 0 && r === "threw").length;
      try {
        const job = await submitDying(a, queue, { tasks: [1, 2, 3] });
        expect(await job.done()).toMatchObject({ status: "failed", dead: 3 });
        const big = b.jobs.redrive(job.id, [0, 1]);
        await holdB.reached.opened;
        await a.jobs.redrive(job.id, [0]);
        await waitUntil(async () => (await side.stored(job.id))?.status === "failed" && threw0() === 2, {
          timeoutMs: 20_000,
          message: "A's copy of task 0 died and the job ended again",
        });
        const third = c.jobs.redrive(job.id, [0]);
        await holdC.reached.opened;
        // B's markers land, its record is written; it waits at its second listing.
        holdB.held.open();
        // (A redrive that lists the letters once, as before 5cb8e9b, ends here.)
        await Promise.race([holdB.listingReached.opened, big]);
        // C's marker lands after B's; C sends task 0, whose copy dies: a death after B's marker.
        holdC.held.open();
        await third;
        await waitUntil(
          async () => threw0() === 3 && (await a.jobs.deadLetters(job.id)).some((l) => l.index === 0),
          { timeoutMs: 20_000, message: "C's copy of task 0 died, its letter stored" },
        );
        flaky.mend();
        holdB.listingHeld.open();
        await big;
        await waitUntil(async () => (await side.stored(job.id))?.status === "failed", {
          timeoutMs: 20_000,
          message: "the job over again",
        });
        await waitUntil(async () => (await side.storedTasks(queue, job.id)) === 0, {
          timeoutMs: 10_000,
          message: "no task of the job left stored",
        });
        const stored = await side.stored(job.id);
        const letters = (await a.jobs.deadLetters(job.id)).map((l) => l.index);
        const summary = JSON.stringify({ counts: stored?.counts, letters, ran });
        // Every task the record counts dead has a letter to redrive it by.
        expect(letters.length, summary).toBe(stored?.counts.dead);
      } finally {
        holdB.held.open();
        holdB.listingHeld.open();
        holdC.held.open();
        await worker.stop();
        await c.stop();
        await b.stop();
        await a.stop();
        await side.dispose();
      }
    });
  },
);
