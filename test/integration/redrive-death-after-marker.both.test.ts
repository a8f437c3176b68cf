/**
 * A worker stores a dying task's letter, then its dead answer (naming that
 * letter). A redrive made in between reads the letter, and its marker (naming
 * it) lands before the dead answer. Counted after the marker, that death
 * stood: the redrive's copy ran, its answer a duplicate, and the redrive
 * removed the letter, so the job ended counting the task dead with no letter
 * to redrive it by (found by a review). The dead answer must be taken back as
 * it lands, and the copy's answer counted.
 *
 * Here the worker's results message holding task 0's dead answer is held
 * until the redrive has stored its marker, sent the copy and removed the
 * letter, and the copy (its upstream mended) waits to answer until that dead
 * answer is stored. Again with the job's supervisor stopped once that dead
 * answer is stored: the runtime that takes the job over counts the stream
 * from the start (the marker, then the death) and must count the same.
 * Oracles: the results as the server stores them (the order), the record as
 * the server stores it, the letters, the handler's ledger, and the results
 * as `results()` reads them.
 */
import { describe, expect, it } from "vitest";
import type { Runtime } from "../../src/api/runtime.ts";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)(
  "a task's dead answer stored after the marker of a redrive of its letter, on %s",
  (_k, makeSide) => {
    it.each([
      ["counted by the job's supervisor", false],
      ["counted by the runtime that takes the job over", true],
    ])("the redrive's copy answers for the task (%s)", { timeout: 60_000 }, async (_name, takeOver) => {
      const side = await makeSide();
      /** The worker's results message holding a death: reached, and held until opened. */
      const deathReached = gate();
      const deathHeld = gate();
      /** The redrive's copy of task 0: delivered, and held in its handler until opened. */
      const copyReached = gate();
      const copyHeld = gate();
      // S submits and supervises; W runs the worker and the redrive, and never supervises.
      const s = await side.runtime("s");
      const w = await side.runtime(
        "w",
        (inner) =>
          spiedBroker(inner, (name, _n, args, call) => {
            if (name !== "publishResults" || !String(args[2]).includes('"dead":true')) return call();
            deathReached.open();
            return deathHeld.opened.then(call);
          }).broker,
        false,
      );
      let t: Runtime | undefined;
      const queue = "death-after-marker";
      const flaky = flakyWorker(w, queue, {
        before: async (index) => {
          if (index !== 0) return;
          copyReached.open();
          await copyHeld.opened;
        },
      });
      const worker = flaky.start();
      const runsOf = (index: number) => flaky.ran.filter(([i]) => i === index).map(([, r]) => r);
      try {
        const job = await submitDying(s, queue);
        // Task 0 threw on its one delivery: its letter is stored, its dead answer held.
        await deathReached.opened;
        await waitUntil(async () => (await w.jobs.deadLetters(job.id)).some((l) => l.index === 0), {
          timeoutMs: 10_000,
          message: "task 0's letter stored",
        });
        flaky.mend();
        // The redrive reads that letter: its marker lands, the copy goes, the letter is removed.
        await w.jobs.redrive(job.id, [0]);
        expect(await w.jobs.deadLetters(job.id)).toEqual([]);
        await copyReached.opened;
        // Taken over: S stops (its lease given back) before the death lands; nobody counts it live.
        const was = await side.storedLease(job.id);
        if (takeOver) await s.stop();
        // The dead answer lands now, after the marker.
        deathHeld.open();
        await waitUntil(
          async () => (await side.storedResults(queue, job.id)).some((r) => r.i === 0 && r.dead === true),
          { timeoutMs: 10_000, message: "task 0's dead answer stored" },
        );
        const said = async () =>
          (await side.storedResults(queue, job.id))
            .filter((r) => r.i === 0)
            .map((r) => (r.redrive ? "marker" : r.ok ? "ok" : r.dead ? "dead" : "failed"));
        // As the server stores them: the marker, then the death.
        expect(await said()).toEqual(["marker", "dead"]);
        if (takeOver) {
          // T takes the job over and counts its results from the start: the marker, then the death.
          t = await side.runtime("t");
          await waitUntil(
            async () => {
              const lease = await side.storedLease(job.id);
              const stored = await side.stored(job.id);
              return (
                stored?.status !== "running" ||
                (lease !== undefined && lease.holder !== was?.holder && lease.until > Date.now())
              );
            },
            { timeoutMs: 15_000, message: "the job taken over" },
          );
          expect(await side.stored(job.id)).toMatchObject({ status: "running" });
        }
        copyHeld.open();
        await waitUntil(() => runsOf(0).includes("ok"), { timeoutMs: 10_000, message: "the copy ran" });
        let seen: unknown;
        await waitUntil(
          async () => {
            const stored = await side.stored(job.id);
            seen = stored;
            return stored?.status === "succeeded" || stored?.status === "failed";
          },
          { timeoutMs: 15_000, message: () => `the job over: ${JSON.stringify(seen)}` },
        );
        await waitUntil(async () => (await side.storedTasks(queue, job.id)) === 0, {
          timeoutMs: 10_000,
          message: "no task of the job left stored",
        });
        expect(runsOf(0)).toEqual(["threw", "ok"]);
        expect(runsOf(1)).toEqual(["ok"]);
        const letters = await w.jobs.deadLetters(job.id);
        expect({ record: await side.stored(job.id), letters }).toMatchObject({
          record: { status: "succeeded", counts: { done: 2, failed: 0, dead: 0 } },
          letters: [],
        });
        expect(await said()).toEqual(["marker", "dead", "ok"]);
        // Its results as read from the stream (results()): the copy's answer is task 0's.
        const read: Array<[number, string]> = [];
        for await (const r of (await w.jobs.get(job.id))!.results())
          read.push([r.index, r.ok ? "ok" : r.dead ? "dead" : "failed"]);
        expect(read.sort()).toEqual([
          [0, "ok"],
          [1, "ok"],
        ]);
      } finally {
        deathHeld.open();
        copyHeld.open();
        await worker.stop();
        await t?.stop();
        await w.stop();
        await s.stop();
        await side.dispose();
      }
    });
  },
);
