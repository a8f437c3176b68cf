/**
 * A job's supervisor whose progress write is held back (an event loop
 * stall, GC, a slow network) past its lease, on both brokers: its lease
 * runs out, another runtime takes the job over (its record written naming
 * the taker), and only then does the held write go out. The fence says that
 * write is refused (`Deposed`) and the old supervisor writes nothing more.
 * Its lease keeper, though, marks the actor "not named yet" (`fenced`
 * false) as soon as it tries to take its run-out lease back, and that mark
 * turns the fence off for the write already in flight: its retry, on the
 * taker's record, goes through. Oracles: every write of the job's record as
 * the store hands it out, and a ledger of which runtime's update stored
 * which revision.
 */
import { describe, expect, it } from "vitest";
import {
  commitStored,
  heldWorker,
  holdWrites,
  leaseBenches,
  onOwnBench,
  takeStored,
  writerOf,
} from "../harness/lease-takeover.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const leaseMs = 2000;

describe.each(leaseBenches)(
  "a supervisor whose progress write is held back past its lease ($name)",
  ({ make }) => {
    it("writes nothing of the job's record once another runtime took the job over", async () => {
      await onOwnBench(make, async (bench, heldGate) => {
        const release = heldGate();
        const aGo = heldGate();
        const bGo = heldGate();
        const queue = "q";
        const committed = gate();
        // Task 1 answers once the job is committed; task 2 only at the test's end.
        const answered = await heldWorker(bench, queue, (n) => (n === 1 ? committed.opened : release.opened));
        const aLog = capturedLog("debug");
        const a = await bench.runtime({ logger: aLog.logger, jobs: { leaseMs, takeOver: false } });
        // A's first progress write of the job (its count of task 1) is held back.
        const aWriting = holdWrites(a, "progress", aGo.opened, "first");
        const job = await a.rt.jobs.submit({ queue, tasks: [1, 2], lane: false, stallAfterMs: 60_000 });
        // Its buckets are made by the first submit; the watch hands out the last write, then each.
        const history = await bench.followRecords();
        await commitStored(a, job.id);
        committed.open();
        expect(await within(aWriting, 20_000), "A writing the job's progress").not.toBe("never");
        expect(answered).toEqual([1]);
        // Held back, A renews nothing: its lease runs out, and B takes the job over. B's writes after
        // its take (its own progress) wait, so the record as B took it is what A's write meets.
        a.faults.fail("lease", Number.POSITIVE_INFINITY);
        const b = await bench.runtime({ jobs: { leaseMs } });
        let bWrites = 0;
        b.faults.before("progress", async () => {
          if (bWrites++ > 0) await bGo.opened;
        });
        await takeStored(history, job.id, b);
        expect(await bench.rawLeaseHolder(job.id)).toBe(b.broker.leases.holder);
        const takenAt = Math.max(0, ...history.of(job.id).map(({ revision }) => revision));
        // A tried to take its run-out lease back since (its lease keeper's line), then its held write goes.
        const tried = aLog.lines.length;
        await waitUntil(() => aLog.lines.slice(tried).some(({ msg }) => msg === "lease renewal failed"), {
          timeoutMs: 10_000,
          message: "A's lease keeper trying its lease again",
        });
        const sentBefore = a.faults.recordUpdates(job.id).length;
        aGo.open();
        await waitUntil(
          () =>
            a.faults
              .recordUpdates(job.id)
              .slice(sentBefore)
              .some((outcome) => outcome !== "refused") ||
            aLog.lines.some(
              ({ msg }) => msg.includes("stepping down") || msg.startsWith("progress not recorded"),
            ),
          { timeoutMs: 10_000, message: "A's held write stored, refused or given up" },
        );
        const byA = a.faults.recordUpdates(job.id);
        const writer = writerOf(a, b, job.id);
        // The store's own account, read once A's outcome is known (the watch may lag it on NATS).
        await waitUntil(
          () =>
            history
              .of(job.id)
              .some(({ revision }) => byA.filter((r) => r !== "refused").includes(revision)) ||
            !byA.slice(sentBefore).some((r) => r !== "refused"),
          { timeoutMs: 10_000, message: "A's stored write seen in the record's history" },
        );
        const since = history
          .of(job.id)
          .filter(({ revision }) => revision > takenAt)
          .map(
            ({ revision, record }) =>
              `${revision} ${String(record.status)} done ${String((record.counts as { done: number }).done)} supervisor ${String(record.supervisor)} by ${writer(revision)}`,
          );
        expect(
          since.filter((line) => line.endsWith("by A")),
          `the record's writes since B took the job over: ${since.join(", ")}`,
        ).toEqual([]);
        history.stop();
      });
    }, 90_000);
  },
);
