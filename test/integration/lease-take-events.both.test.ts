/**
 * `rt.jobs.events()` across a takeover, on both brokers. A reader started
 * after a job's commit, the job running with nothing answered: its
 * supervisor's lease runs out and another runtime takes the job over. The
 * taker's first act writes the record as it read it, naming itself (the
 * commit's `updatedAt` kept). The reader takes that write, the first it
 * sees of the job, for the job's commit (`isCommitWrite`: running, nothing
 * answered, written by its commit deadline) and tells `created` for a job
 * created before it started. Before, a takeover wrote nothing. Oracles: the
 * record's writes as the store hands them out (the job's commit before the
 * reader started; after it, only the take) and the worker's ledger
 * (nothing answered).
 */
import { describe, expect, it } from "vitest";
import type { JobEvent } from "../../src/kernel/job-event.ts";
import { commitStored, heldWorker, leaseBenches, onOwnBench, takeStored } from "../harness/lease-takeover.ts";
import { waitUntil } from "../harness/wait.ts";

const leaseMs = 2000;

describe.each(leaseBenches)("rt.jobs.events() across a takeover ($name)", ({ make }) => {
  it("tells no job created before the reader started as created when it is taken over", async () => {
    await onOwnBench(make, async (bench, heldGate) => {
      const release = heldGate();
      const queue = "q";
      const answered = await heldWorker(bench, queue, () => release.opened);
      const a = await bench.runtime({ jobs: { leaseMs, takeOver: false } });
      const job = await a.rt.jobs.submit({ queue, tasks: [1, 2], lane: false, stallAfterMs: 60_000 });
      await commitStored(a, job.id);
      const history = await bench.followRecords();
      const reader = await bench.runtime({ roles: ["submitter"], jobs: { takeOver: false } });
      const events = reader.rt.jobs.events();
      await events.ready;
      const told: JobEvent[] = [];
      void (async () => {
        for await (const event of events) told.push(event);
      })();
      const readerFrom = Date.now();
      // A's lease runs out; B takes the job over.
      a.faults.fail("lease", Number.POSITIVE_INFINITY);
      const b = await bench.runtime({ jobs: { leaseMs } });
      await takeStored(history, job.id, b);
      const take = history.of(job.id).find(({ record }) => record.supervisor === b.broker.leases.holder);
      expect(take?.record, "the take: the commit as written, nothing answered").toMatchObject({
        status: "running",
        counts: { done: 0, failed: 0, dead: 0 },
      });
      expect(Number(take?.record.createdAt)).toBeLessThan(readerFrom);
      expect(answered).toEqual([]);
      // The reader has had the take's write (it told something of it, or a later write's).
      release.open();
      await waitUntil(() => told.some((e) => e.jobId === job.id && e.type === "succeeded"), {
        timeoutMs: 30_000,
        message: "the reader told the job's end",
      });
      const types = told.filter((e) => e.jobId === job.id).map((e) => e.type);
      const writes = history
        .of(job.id)
        .map(
          ({ revision, record }) =>
            `${revision} ${String(record.status)} supervisor ${record.supervisor === b.broker.leases.holder ? "B" : String(record.supervisor)}`,
        );
      expect(
        types,
        `the events told of the job since the reader started (the record's writes since: ${writes.join(", ")})`,
      ).not.toContain("created");
      history.stop();
      await events.return();
    });
  }, 90_000);
});
