/**
 * A redrive of a task whose term was lost: its worker stored its letter
 * and dead answer, and its term never reached the server, so its message
 * stays stored until its ack wait runs out; then its advisory stores a
 * second dead answer. Redriven before that, the advisory's dead answer
 * landed after the redrive's marker and counted as the copy's: the job
 * failed with the task dead, the copy's success ignored, and the
 * advisory's letter listed it dead. The redrive now deletes the dead
 * task's own message before its marker; the advisory finds it gone.
 * One runtime runs the job and the worker (task 1 held, so the job runs
 * on) and redrives. The oracles: the tasks and the record as the server
 * stores them, the dead letters, the handler's ledger.
 */
import { describe, expect, it } from "vitest";
import { type Faults, faultyBroker } from "../harness/faulty-broker.ts";
import { memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a redrive of a task whose term was lost, on %s", (_kind, makeSide) => {
  it("removes its old message: no late dead answer counts against the copy", {
    timeout: 40_000,
  }, async () => {
    const side = await makeSide();
    let faults: Faults | undefined;
    const a = await side.runtime("a", (inner) => {
      const faulty = faultyBroker(inner);
      faults = faulty.faults;
      return faulty.broker;
    });
    const queue = "term_lost";
    const copy = gate();
    const other = gate();
    const ran: Array<[number, "ok" | "threw"]> = [];
    const worker = a.workers.start<number, number>({
      queue,
      concurrency: 4,
      handler: async (task) => {
        if (task.index === 1) await other.opened;
        else if (ran.some(([i]) => i === 0)) await copy.opened;
        else {
          ran.push([0, "threw"]);
          throw new Error("upstream down");
        }
        ran.push([task.index, "ok"]);
        return task.payload * 2;
      },
    });
    try {
      faults?.fail("term", 1);
      const job = await submitDying(a, queue, { ackWaitMs: 5_000 });
      await waitUntil(async () => (await side.stored(job.id))?.counts.dead === 1, {
        timeoutMs: 10_000,
        message: "task 0 dead, its term lost",
      });
      expect(faults?.injected("term")).toBe(1);
      await a.jobs.redrive(job.id, [0]);
      // Task 1 (held) and the copy of task 0: before, the old message of task 0 was stored
      // too, and its advisory's dead answer came after the marker.
      expect(await side.storedTasks(queue, job.id)).toBe(2);
      copy.open();
      other.open();
      await waitUntil(async () => (await side.stored(job.id))?.status === "succeeded", {
        timeoutMs: 20_000,
        message: "the job, task 0 redriven, succeeded",
      });
      expect(await side.stored(job.id)).toMatchObject({ counts: { done: 2, failed: 0, dead: 0 } });
      expect(await a.jobs.deadLetters(job.id)).toEqual([]);
      await worker.stop();
      expect(ran.filter(([i]) => i === 0)).toEqual([
        [0, "threw"],
        [0, "ok"],
      ]);
    } finally {
      copy.open();
      other.open();
      await worker.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
