/**
 * A redrive whose tasks' publish fails after its record write, with another
 * write of the record in between (the supervisor's progress, counting the
 * redrive's marker): the redrive must put the record back as its write
 * found it, so that the dead letter, still stored, can be redriven again.
 * It put it back only if no write came after its own, and left the record
 * naming the redrive: the same redrive made again (the same letters, the
 * same id) found its id there and did nothing, for good. Runtime A ran the
 * job; runtime B redrives, its first publish of the task refused after a
 * write of its own of the record (as a supervisor's progress would be). The
 * oracles: the record read from the server's store, the dead letters, and
 * the handler's ledger.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a redrive whose publish fails after another write of the record, on %s", (_kind, makeSide) => {
  it("puts the record back, and the same redrive made again runs the task", { timeout: 40_000 }, async () => {
    const side = await makeSide();
    let refusals = 0;
    const refuseFirstPublish = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        if (name !== "publishTasks" || !(args[0] as JobRecord).submitId.startsWith("r") || refusals > 0)
          return call();
        refusals++;
        const id = (args[0] as JobRecord).id;
        // Another write lands after the redrive's (a progress write), then the publish fails.
        return inner
          .getRecord(id)
          .then((found) =>
            found
              ? inner.updateRecord({ ...found.record, updatedAt: found.record.updatedAt + 1 }, found.revision)
              : 0,
          )
          .then(() => Promise.reject(new Error("publish refused")));
      }).broker;
    const a = await side.runtime("a");
    const b = await side.runtime("b", refuseFirstPublish);
    const flaky = flakyWorker(a, "unpublished");
    const worker = flaky.start();
    try {
      const job = await submitDying(a, "unpublished");
      expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
      const ended = await side.stored(job.id);
      flaky.mend();
      await expect(b.jobs.redrive(job.id)).rejects.toThrow();
      expect(refusals).toBe(1);
      // Put back: the end as it was, its dead task and letter there to redrive again.
      expect(await side.stored(job.id)).toMatchObject({
        status: "failed",
        counts: { done: 1, failed: 0, dead: 1 },
        ...(ended?.redrive === undefined ? {} : { redrive: ended.redrive }),
      });
      expect((await side.stored(job.id))?.redrive).toBe(ended?.redrive);
      expect(await b.jobs.deadLetters(job.id)).toHaveLength(1);
      // The same redrive again: the task runs, the job succeeds.
      const again = await b.jobs.redrive(job.id);
      expect(await again.done()).toMatchObject({ status: "succeeded", done: 2, dead: 0 });
      expect(flaky.ran.filter(([i]) => i === 0)).toEqual([
        [0, "threw"],
        [0, "ok"],
      ]);
      expect(await b.jobs.deadLetters(job.id)).toEqual([]);
    } finally {
      await worker.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
