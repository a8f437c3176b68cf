/**
 * A takeover racing a cancel, on both brokers. A's lease store is away, so
 * its lease runs out; B, watching the job (`get`), takes the lease, and its
 * take's write of the record (naming B) is on its way. Meanwhile a cancel
 * through A's handle is written with the counts A knew: an answer stored
 * just before that write lands is not among them. Its supervisor raises the
 * answers it counted onto an end written elsewhere ("the supervisor raises
 * the rest", runtime-job-handle.ts; `raiseEndCounts`). B counted the answer
 * and holds the lease, but acts as supervisor only once its take is stored
 * (`actsAsSupervisor`), and its take then finds the job over. The raise is
 * the lease holder's, named or not (it only ever raises counts): before, no
 * one raised, and the job's end said fewer answers than were stored, for
 * good (failed first; found by a review). Oracles: the results stored (raw) and the job's record as the store hands
 * it out.
 */
import { describe, expect, it } from "vitest";
import type { FaultBench } from "../harness/fault-runtimes.ts";
import { heldWorker, leaseBenches, onOwnBench } from "../harness/lease-takeover.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const leaseMs = 2000;

/** The job's answers stored, read raw (duplicates included). */
const storedDone = async (bench: FaultBench, queue: string, jobId: string) =>
  (await bench.rawResults(queue, jobId)).filter((e) => e.ok === true && e.redrive !== true).length;

describe.each(leaseBenches)("a cancel landing while a taker's take is on its way ($name)", ({ make }) => {
  it(
    "gets the answers stored before it counted in the job's end",
    () =>
      onOwnBench(make, async (bench, heldGate) => {
        const first = heldGate();
        const second = heldGate();
        const bGo = heldGate();
        const queue = "q";
        const answered = await heldWorker(bench, queue, (p) => (p === 1 ? first : second).opened, 2);
        const a = await bench.runtime({ jobs: { leaseMs, takeOver: false } });
        const job = await a.rt.jobs.submit({ queue, tasks: [1, 2], lane: false, stallAfterMs: 60_000 });
        await waitUntil(async () => (await bench.rawLeaseHolder(job.id)) === a.broker.leases.holder, {
          timeoutMs: 10_000,
          message: "the job's lease held by A",
        });
        const history = await bench.followRecords();
        // B watches the job; its take's write (its first write of the job) is held until told.
        const b = await bench.runtime({ jobs: { leaseMs } });
        const bTaking = gate();
        let bWrites = 0;
        b.faults.before("progress", async () => {
          if (bWrites++ > 0) return;
          bTaking.open();
          await bGo.opened;
        });
        const watched = await b.rt.jobs.get(job.id);
        a.faults.fail("lease", Number.POSITIVE_INFINITY);
        expect(await within(bTaking.opened, 30_000), "B taking the job over").not.toBe("never");
        expect(await bench.rawLeaseHolder(job.id)).toBe(b.broker.leases.holder);
        // A's cancel, its counts taken: task 1 answers (stored, and counted by B) before it lands.
        a.faults.before("finalize", async () => {
          first.open();
          await waitUntil(
            async () => (await storedDone(bench, queue, job.id)) === 1 && watched?.snapshot().done === 1,
            { timeoutMs: 10_000, message: "task 1's answer stored, and counted by B" },
          );
        });
        const cancelled = job.cancel("enough");
        await waitUntil(() => history.of(job.id).some(({ record }) => record.status === "failed"), {
          timeoutMs: 20_000,
          message: "the cancel stored",
        });
        bGo.open();
        // B's take finds the job over; its actor ends with it and lets the lease go.
        await waitUntil(async () => (await bench.rawLeaseHolder(job.id)) === undefined, {
          timeoutMs: 20_000,
          message: "the job's lease gone",
        });
        const stored = await storedDone(bench, queue, job.id);
        const raised = await waitUntil(
          () => history.of(job.id).some(({ record }) => (record.counts as { done: number }).done === stored),
          { timeoutMs: 10_000, message: "the end's counts raised" },
        ).then(
          () => "raised",
          () => "never",
        );
        const written = history
          .of(job.id)
          .map(
            ({ revision, record }) => `${revision} ${String(record.status)} ${JSON.stringify(record.counts)}`,
          );
        expect(
          raised,
          `${stored} answer(s) stored (worker: ${answered.join(", ")}); the record's writes: ${written.join(", ")}`,
        ).toBe("raised");
        expect(await within(cancelled, 10_000)).toMatchObject({ status: "failed" });
        history.stop();
      }),
    120_000,
  );
});
