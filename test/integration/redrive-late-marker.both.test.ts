/**
 * Redrive [0, 1] reads the letters, then its markers land only after redrive
 * [0], made meanwhile, sent task 0 back and that copy died again: its marker
 * of task 0 takes back the copy's death, which it had not read. Its task 0
 * then went under the id of the letters it had read, the id [0] had used, and
 * the server kept none (the duplicate window): no copy followed the death it
 * took back, and the job waited for task 0 until it stalled. Now a task whose
 * marker took back a death whose letter it had not read goes under the id of
 * every letter of the task, that one's included, and that letter is removed
 * with the others. Oracles: the record as the server stores it, the tasks
 * stored raw, and the handler's ledger.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { memorySide, natsSide } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("redrive [0, 1] whose markers land after [0]'s copy died again, on %s", (_k, makeSide) => {
  it("sends task 0 back once more, and the job ends", { timeout: 60_000 }, async () => {
    const side = await makeSide();
    const markersHeld = gate();
    const markersReached = gate();
    const hold = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        // The markers' results message of the big redrive (named `redrive.<job>.<id>`).
        if (name === "publishResults" && String(args[3]).startsWith("redrive.")) {
          markersReached.open();
          return markersHeld.opened.then(call);
        }
        return call();
      }).broker;
    const a = await side.runtime("a");
    const b = await side.runtime("b", hold, false);
    const queue = "late-marker";
    let down = true;
    const ran: Array<[number, "threw" | "ok"]> = [];
    const worker = a.workers.start<number, number>({
      queue,
      concurrency: 4,
      handler: (task) => {
        ran.push([task.index, down ? "threw" : "ok"]);
        if (down) throw new Error("upstream down");
        return task.payload * 2;
      },
    });
    try {
      const job = await a.jobs.submit<number, number>({
        queue,
        tasks: [1, 2, 3],
        maxDeliver: 1,
        backoff: [0],
      });
      expect(await job.done()).toMatchObject({ status: "failed", dead: 3 });
      // [0, 1] reads the letters, then waits at its markers.
      const big = b.jobs.redrive(job.id, [0, 1]);
      await markersReached.opened;
      // [0] sends task 0 back; its copy dies again (upstream still down), and the job ends.
      await a.jobs.redrive(job.id, [0]);
      await waitUntil(async () => (await a.jobs.deadLetters(job.id)).some((l) => l.index === 0), {
        timeoutMs: 20_000,
        message: "task 0's copy died again",
      });
      await waitUntil(async () => (await side.stored(job.id))?.status === "failed", {
        timeoutMs: 20_000,
        message: "the job ended again",
      });
      expect(ran.filter(([i]) => i === 0)).toEqual([
        [0, "threw"],
        [0, "threw"],
      ]);
      // Upstream back; [0, 1]'s markers land after the copy's death.
      down = false;
      markersHeld.open();
      await big;
      await waitUntil(async () => (await side.stored(job.id))?.status !== "running", {
        timeoutMs: 20_000,
        message: "the job ended after [0, 1]",
      });
      expect(await side.stored(job.id)).toMatchObject({
        status: "failed",
        counts: { done: 2, failed: 0, dead: 1 },
      });
      expect(ran.filter(([i]) => i === 0)).toEqual([
        [0, "threw"],
        [0, "threw"],
        [0, "ok"],
      ]);
      expect(ran.filter(([i]) => i === 1)).toEqual([
        [1, "threw"],
        [1, "ok"],
      ]);
      expect((await a.jobs.deadLetters(job.id)).map((l) => l.index)).toEqual([2]);
    } finally {
      markersHeld.open();
      await worker.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
