/**
 * The redrive of a job over (failed, task 0 dead) whose record write is
 * stored but answered with a failure (a timeout: its outcome unknown to the
 * redrive). Its marker took task 0's death back; the redrive then stores the
 * death again under a new letter (`keepDead`) and rejects, as its code says:
 * "Not written, or its outcome unknown: written, the job counts those deaths
 * again and ends." Written, the record says `running` (the end dropped), and
 * the redrive, rejected before its enrol, wrote no lease: a job over has
 * none, and a takeover pass finds jobs by their leases. No supervisor ever
 * counts the death stored again: the job stays `running`, every task
 * answered in its results (listings, metrics, a flow waiting on it), until a
 * `done()` asked of a runtime that takes jobs over adopts it, or the cleanup
 * pass (every 10 minutes by default; off in these sides,
 * `cleanupIntervalMs: 0`: for good) gives it a lease. The job must
 * end (failed, task 0 dead, its new letter there), or be put back over.
 * Oracles: the record and lease as the server stores them, the raw results.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { lastSaid } from "../harness/raw-results.ts";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil } from "../harness/wait.ts";

const isFinalStatus = (status: string | undefined) => status === "failed" || status === "succeeded";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a redrive of a job over whose record write's outcome is unknown, on %s", (_kind, makeSide) => {
  it("rejects saying the death is stored again: the job ends counting it", { timeout: 60_000 }, async () => {
    const side = await makeSide();
    // The redrive's record write is stored, then answered with a timeout.
    let writes = 0;
    const unknownWrite = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        if (name !== "updateRecord" || (args[0] as JobRecord).redrive === undefined || writes++ > 0)
          return call();
        return (call() as Promise<unknown>).then(() => Promise.reject(new Error("timed out")));
      }).broker;
    // The submitter takes jobs over; the redriver does not (as the CLI).
    const a = await side.runtime("a");
    const b = await side.runtime("b", unknownWrite, false);
    const queue = "write_unknown_over";
    const flaky = flakyWorker(a, queue);
    const worker = flaky.start();
    try {
      const job = await submitDying(a, queue);
      expect(await job.done()).toMatchObject({ status: "failed", done: 1, dead: 1 });
      flaky.mend();
      await expect(b.jobs.redrive(job.id)).rejects.toThrow(/the deaths of tasks 0 are stored again/);
      expect(writes).toBe(1);
      // Its death stored again after the marker: every task answered in the results.
      const results = await side.storedResults(queue, job.id);
      expect([lastSaid(results, 0), lastSaid(results, 1)]).toEqual(["dead", "done"]);
      expect((await a.jobs.deadLetters(job.id)).map((l) => l.index)).toEqual([0]);
      // The job ends counting task 0 dead, supervised by a runtime that takes jobs over (a
      // lease's run-out and a takeover pass are well within), with no one asking for it.
      await waitUntil(async () => isFinalStatus((await side.stored(job.id))?.status), {
        timeoutMs: 10_000,
        message: "the job over again",
      }).catch(() => undefined);
      expect({ record: await side.stored(job.id), lease: await side.storedLease(job.id) }).toMatchObject({
        record: { status: "failed", counts: { done: 1, failed: 0, dead: 1 } },
      });
    } finally {
      await worker.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
