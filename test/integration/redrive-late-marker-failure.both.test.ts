/**
 * Two redrives of one job with different sets, both tasks dead: B = [0, 1]
 * reads the letters and waits at its markers; A = [0] sends task 0 back, and
 * that copy fails for good (a `PermanentError`: a failure, not a death). The
 * job ends failed. B's markers land then: task 0's finds its failure (no
 * marker takes a failure back, as the job counts it), task 1's takes its
 * death back; B's copy of task 1 answers, its copy of task 0 is A's (kept
 * once). The job counts task 0 failed and task 1 done, and `results()` must
 * list them so (it took task 0's failure back with B's marker, and listed
 * task 0 not at all: test/unit/results-late-marker.test.ts).
 * Oracles: the record as the server stores it, the results as the server
 * stores them (the order), the handler's ledger, and `results()`.
 */
import { describe, expect, it } from "vitest";
import { PermanentError } from "../../src/kernel/task-outcome.ts";
import { holdMarkers, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)(
  "a redrive's marker landing after the copy another redrive sent failed for good, on %s",
  (_k, makeSide) => {
    it("results() lists the task failed, as the job counts it", { timeout: 60_000 }, async () => {
      const side = await makeSide();
      const holdB = holdMarkers();
      const a = await side.runtime("a");
      const b = await side.runtime("b", holdB.wrap, false);
      const queue = "late-marker-failure";
      let mode: "down" | "mended" = "down";
      const ran: Array<[number, string]> = [];
      const worker = a.workers.start<number, number>({
        queue,
        concurrency: 4,
        handler: async (task) => {
          if (mode === "down") {
            ran.push([task.index, "threw"]);
            throw new Error("upstream down");
          }
          if (task.index === 0) {
            ran.push([0, "failed"]);
            throw new PermanentError("bad input");
          }
          ran.push([task.index, "ok"]);
          return task.payload * 2;
        },
      });
      let bDone: Promise<unknown> | undefined;
      try {
        const job = await submitDying(a, queue);
        expect(await job.done()).toMatchObject({ status: "failed", dead: 2 });
        // B reads both letters, and waits at its markers.
        bDone = b.jobs.redrive(job.id, [0, 1]);
        await holdB.reached.opened;
        mode = "mended";
        // A sends task 0 back; its copy fails for good, and the job ends again (task 1 dead).
        await a.jobs.redrive(job.id, [0]);
        await waitUntil(
          async () => {
            const stored = await side.stored(job.id);
            return stored?.status === "failed" && stored.counts.failed === 1;
          },
          { timeoutMs: 15_000, message: "the job over again, task 0 failed" },
        );
        // B's markers land now; B sends task 1 back.
        holdB.held.open();
        await bDone;
        await waitUntil(
          async () => {
            const stored = await side.stored(job.id);
            return stored?.status === "failed" && stored.counts.done === 1;
          },
          { timeoutMs: 15_000, message: "the job over, task 1 done" },
        );
        expect(await side.stored(job.id)).toMatchObject({ counts: { done: 1, failed: 1, dead: 0 } });
        const said = (await side.storedResults(queue, job.id))
          .filter((r) => r.i === 0)
          .map((r) => (r.redrive ? "marker" : r.ok ? "ok" : r.dead ? "dead" : "failed"));
        // As the server stores them: the death, A's marker, the copy's failure, B's marker.
        expect(said).toEqual(["dead", "marker", "failed", "marker"]);
        expect(ran.filter(([i]) => i === 0)).toEqual([
          [0, "threw"],
          [0, "failed"],
        ]);
        // Bounded: a reader started before this runtime's actor heard the end waits, for good, for
        // the answer it took back (it ends once it has yielded as many as the job counts).
        const read: Array<[number, string]> = [];
        const reading = (async () => {
          for await (const r of (await a.jobs.get(job.id))!.results())
            read.push([r.index, r.ok ? "ok" : r.dead ? "dead" : "failed"]);
          return "ended" as const;
        })();
        const outcome = await Promise.race([
          reading,
          new Promise<"still waiting">((resolve) => setTimeout(() => resolve("still waiting"), 10_000)),
        ]);
        expect({ outcome, read: read.sort() }).toEqual({
          outcome: "ended",
          read: [
            [0, "failed"],
            [1, "ok"],
          ],
        });
      } finally {
        holdB.held.open();
        await bDone?.catch(() => undefined);
        await worker.stop();
        await b.stop();
        await a.stop();
        await side.dispose();
      }
    });
  },
);
