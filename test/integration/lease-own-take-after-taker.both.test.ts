/**
 * A supervisor taking its own run-out lease back after a taker came and
 * went, on both brokers. A's lease store is away (every renewal fails), B
 * takes the job over (the record names B), then B stops and gives the lease
 * back. A, never told its lease was taken (its renewals failed before they
 * reached the store), takes its own lease back: the lease is A's again and
 * A's take writes the record naming A. While that take's write is on its
 * way A acts on (`seen.fenced` stays true for its own lease, job-lease.ts),
 * and a progress write of A's meets B's name: not yet known to stand, it
 * fails as transient (`fenceOf`), and a refusal read just before the take
 * landed is read again once the take settled (`stillDeposed`). Before, A
 * stepped down (`Deposed`) though it held the lease and its take then named
 * it; taking no job over (`takeOver: false`), nobody supervised the job and
 * it never ended (failed first; found by a review). Oracles: the job's
 * record as the store hands it out and the worker's ledger.
 */
import { describe, expect, it } from "vitest";
import { heldWorker, leaseBenches, onOwnBench } from "../harness/lease-takeover.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const leaseMs = 2000;

describe.each(leaseBenches)(
  "a supervisor taking its own lease back after a taker left ($name)",
  ({ make }) => {
    it(
      "goes on supervising its job: the job ends",
      () =>
        onOwnBench(make, async (bench, heldGate) => {
          const first = heldGate();
          const second = heldGate();
          const takeGo = heldGate();
          const queue = "q";
          const answered = await heldWorker(bench, queue, (p) => (p === 1 ? first : second).opened, 2);
          const aLog = capturedLog("warn");
          const a = await bench.runtime({ logger: aLog.logger, jobs: { leaseMs, takeOver: false } });
          const job = await a.rt.jobs.submit({ queue, tasks: [1, 2], lane: false, stallAfterMs: 60_000 });
          await waitUntil(async () => (await bench.rawLeaseHolder(job.id)) === a.broker.leases.holder, {
            timeoutMs: 10_000,
            message: "the job's lease held by A",
          });
          const history = await bench.followRecords();
          // A's lease store away: its lease runs out, and B takes the job over.
          a.faults.fail("lease", Number.POSITIVE_INFINITY);
          const b = await bench.runtime({ jobs: { leaseMs } });
          await waitUntil(
            () => history.of(job.id).some(({ record }) => record.supervisor === b.broker.leases.holder),
            {
              timeoutMs: 30_000,
              message: "B's take written (the record names B)",
            },
          );
          // B leaves: its lease given back.
          await b.stop();
          // A's lease store back; A's take of its own lease: its record write held until told.
          const aTaking = gate();
          let held = false;
          a.faults.before("progress", async () => {
            if (held) return;
            held = true;
            aTaking.open();
            await takeGo.opened;
          });
          a.faults.heal("lease");
          expect(await within(aTaking.opened, 20_000), "A taking its lease back").not.toBe("never");
          expect(await bench.rawLeaseHolder(job.id)).toBe(a.broker.leases.holder);
          // An answer comes in while A's take is on its way: A's progress write.
          first.open();
          await waitUntil(() => answered.length === 1 && job.snapshot().done === 1, {
            timeoutMs: 10_000,
            message: "the first answer counted by A",
          });
          // A's progress write (its timer's, within a second of the count) meets B's name: refused,
          // as not yet known to stand while A's take is on its way, or A steps down (what went
          // wrong). The take's write waits for either, so that the refusal comes first.
          await waitUntil(
            () =>
              aLog.lines.some(
                ({ msg }) => msg.includes("stepping down") || msg.includes("progress not recorded"),
              ),
            { timeoutMs: 10_000, message: "A's progress write refused" },
          );
          takeGo.open();
          await waitUntil(
            () => history.of(job.id).some(({ record }) => record.supervisor === a.broker.leases.holder),
            {
              timeoutMs: 10_000,
              message: "A's take written (the record names A)",
            },
          );
          second.open();
          await waitUntil(() => answered.length === 2, { timeoutMs: 10_000, message: "both tasks answered" });
          const ended = await waitUntil(
            () => history.of(job.id).some(({ record }) => record.status === "succeeded"),
            { timeoutMs: 20_000, message: "the job's end stored" },
          ).then(
            () => "ended",
            () => "never",
          );
          const written = history
            .of(job.id)
            .map(
              ({ revision, record }) =>
                `${revision} ${String(record.status)} ${JSON.stringify(record.counts)} ${String(record.supervisor)}`,
            );
          const lease = await bench.rawLeaseHolder(job.id);
          expect(
            ended,
            `both tasks answered (${answered.join(", ")}); the job's record writes: ${written.join(", ")}; its lease names ${String(lease)}`,
          ).toBe("ended");
          expect(await within(job.done(), 10_000)).toMatchObject({ status: "succeeded", done: 2 });
          history.stop();
        }),
      120_000,
    );
  },
);
