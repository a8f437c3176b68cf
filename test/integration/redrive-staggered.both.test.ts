/**
 * Redrive [0] writes the job's record, then, before it publishes and removes
 * its letters, redrive [0, 1] starts: it reads the record already naming
 * [0]'s redrive and task 0's letter still there. Its marker of task 0 takes
 * back nothing (the first marker after the death did), so it lowers `dead`
 * by 1: three tasks dead, two sent back, 1 left. It lowered by its whole set
 * before, and the record said 0 dead with task 2's letter there (a review).
 * Oracles: the record's writes as the broker got them, and the tasks stored,
 * read raw (task 0 once).
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { memorySide, natsSide, threeDead } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("redrive [0], then [0, 1] started once [0] wrote the record, on %s", (_k, makeSide) => {
  it("the record's dead count is the task left dead", { timeout: 40_000 }, async () => {
    const side = await makeSide();
    const smallWrote = gate();
    const bigDone = gate();
    let holding = false;
    const written: Array<{ redrive?: string; dead: number }> = [];
    const order = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        if (!holding) return call();
        if (name === "updateRecord") {
          const next = args[0] as JobRecord;
          return (call() as Promise<unknown>).then((v) => {
            written.push({ redrive: next.redrive, dead: next.counts.dead });
            smallWrote.open();
            return v;
          });
        }
        // [0]'s publish waits until [0, 1] is over.
        if (name === "publishTasks" && (args[1] as string[]).length === 1) return bigDone.opened.then(call);
        return call();
      }).broker;
    const a = await side.runtime("a");
    const b = await side.runtime("b", order, false);
    const queue = "stagger";
    const { job, worker, answer, mend } = await threeDead(a, queue);
    try {
      mend();
      holding = true;
      const small = b.jobs.redrive(job.id, [0]);
      await smallWrote.opened;
      await b.jobs.redrive(job.id, [0, 1]);
      bigDone.open();
      await small;
      holding = false;
      expect(await side.storedTasks(queue, job.id)).toBe(2);
      expect(written.map((w) => w.dead)).toEqual([2, 1]);
      expect((await side.stored(job.id))?.counts.dead).toBe(1);
    } finally {
      answer.open();
      bigDone.open();
      smallWrote.open();
      await worker.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
