/**
 * A redrive refused in its record write ([0, 1]: the job cancelled
 * meanwhile) stores again the deaths its markers took back, and only those:
 * task 0's was taken back by an earlier redrive [0], whose copy was running
 * when the job was cancelled (its letter removed). It stored a death for
 * every task of its set before, and the results said task 0 died again
 * with its old error (a review). The oracle: the job's results read raw.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { lastSaid } from "../harness/raw-results.ts";
import { memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("refused redrive after an overlapping one, on %s", (_k, makeSide) => {
  it("stores deaths only for what its marker took back", { timeout: 40_000 }, async () => {
    const side = await makeSide();
    const reached = gate();
    const resume = gate();
    const answer = gate();
    const hold = (inner: Broker) =>
      spiedBroker(inner, (name, n, _args, call) => {
        if (name !== "createConsumer" || n !== 1) return call();
        reached.open();
        return resume.opened.then(call);
      }).broker;
    const a = await side.runtime("a");
    const b = await side.runtime("b", hold);
    const queue = "refused2";
    let down = true;
    const worker = a.workers.start<number, number>({
      queue,
      concurrency: 4,
      handler: async (task) => {
        if (down && task.index < 2) throw new Error("upstream down");
        await answer.opened;
        return task.payload;
      },
    });
    try {
      const job = await submitDying(a, queue, { tasks: [1, 2, 3] });
      await waitUntil(async () => (await side.stored(job.id))?.counts.dead === 2, {
        timeoutMs: 10_000,
        message: "tasks 0 and 1 dead",
      });
      down = false;
      const big = b.jobs.redrive(job.id, [0, 1]).then(
        () => undefined,
        (e: unknown) => e,
      );
      await reached.opened;
      await b.jobs.redrive(job.id, [0]);
      await job.cancel("enough");
      await waitUntil(async () => !(await side.storedConsumer(queue, job.id)), {
        timeoutMs: 10_000,
        message: "consumer deleted",
      });
      resume.open();
      expect(await big).toMatchObject({ _tag: "InvalidArgument" });
      const after = await side.storedResults(queue, job.id);
      expect(lastSaid(after, 0)).toBe("taken back");
      expect(lastSaid(after, 1)).toBe("dead");
    } finally {
      resume.open();
      answer.open();
      await worker.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
