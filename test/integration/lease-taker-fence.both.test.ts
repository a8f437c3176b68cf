/**
 * A job's supervisor whose write of the job's end is held back (an event
 * loop stall, GC, a slow network) past its lease, on both brokers: another
 * runtime takes the job over and decides the end as its supervisor, and only
 * then does the held write go out. A pure timing lease cannot stop it: the
 * holder checked that it held the lease before the stall. The record's
 * compare-and-set was on the revision the first supervisor last saw, which
 * nothing had changed: the taker wrote nothing when it took the job over.
 * Oracles: every write of the job's record as the store hands it out (the
 * bucket's stream on NATS), and a ledger of which runtime's update stored
 * which revision.
 */
import { describe, expect, it } from "vitest";
import {
  endStored,
  heldWorker,
  holdWrites,
  leaseBenches,
  onOwnBench,
  writerOf,
} from "../harness/lease-takeover.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { waitUntil, within } from "../harness/wait.ts";

const leaseMs = 2000;

describe.each(leaseBenches)(
  "a supervisor whose end's write is held back past its lease ($name)",
  ({ make }) => {
    it("writes nothing of the job's record once another runtime took the job over", async () => {
      await onOwnBench(make, async (bench, heldGate) => {
        const release = heldGate();
        const aGo = heldGate();
        const bGo = heldGate();
        const queue = "q";
        await heldWorker(bench, queue, () => release.opened);
        const aLog = capturedLog("warn");
        const a = await bench.runtime({ logger: aLog.logger, jobs: { leaseMs, takeOver: false } });
        const job = await a.rt.jobs.submit({ queue, tasks: [1], lane: false, stallAfterMs: 60_000 });
        await waitUntil(async () => (await bench.rawLeaseHolder(job.id)) === a.broker.leases.holder, {
          timeoutMs: 10_000,
          message: "the job's lease held by A",
        });
        const history = await bench.followRecords();
        // A decides the job's end and checks that it holds the lease; its write is then held back.
        const aWriting = holdWrites(a, "finalize", aGo.opened, "each");
        release.open();
        expect(await within(aWriting, 20_000), "A writing the job's end").not.toBe("never");
        // Held back, A renews nothing: its lease runs out, and B takes the job over.
        a.faults.fail("lease", Number.POSITIVE_INFINITY);
        const b = await bench.runtime({ jobs: { leaseMs } });
        const bWriting = holdWrites(b, "finalize", bGo.opened, "each");
        expect(await within(bWriting, 30_000), "B writing the job's end as its supervisor").not.toBe("never");
        expect(await bench.rawLeaseHolder(job.id)).toBe(b.broker.leases.holder);
        const takenAt = Math.max(0, ...history.of(job.id).map(({ revision }) => revision));
        // A's held write goes out now, B's once A stored something or gave its end up (its
        // line only tells when to go on: what was stored is read raw below).
        const sentBefore = a.faults.recordUpdates(job.id).length;
        aGo.open();
        await waitUntil(
          () =>
            a.faults
              .recordUpdates(job.id)
              .slice(sentBefore)
              .some((outcome) => outcome !== "refused") ||
            aLog.lines.some(({ msg }) => msg.startsWith("job's end not written; left to")),
          { timeoutMs: 10_000, message: "A's write of the job's end stored or given up" },
        );
        bGo.open();
        await endStored(history, job.id, "succeeded");
        const writer = writerOf(a, b, job.id);
        const written = history.of(job.id);
        const since = written
          .filter(({ revision }) => revision > takenAt)
          .map(({ revision, record }) => `${revision} ${String(record.status)} by ${writer(revision)}`);
        expect(
          since.filter((line) => line.endsWith("by A")),
          `the record's writes since B took the job over: ${since.join(", ")}`,
        ).toEqual([]);
        const end = written.find(({ record }) => record.status === "succeeded");
        expect(end?.record).toMatchObject({ status: "succeeded", counts: { done: 1, failed: 0, dead: 0 } });
        expect(writer(end?.revision ?? 0), "who wrote the job's end").toBe("B");
        // A's handle says the end its taker recorded.
        expect(await within(job.done(), 20_000)).toMatchObject({ status: "succeeded", done: 1 });
        history.stop();
      });
    }, 90_000);
  },
);
