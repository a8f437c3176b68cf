/**
 * A supervisor whose wall clock is stepped ahead (NTP, a VM resumed) past its
 * own lease and past its job's stall window, on both brokers, costs one record
 * write and nothing more: no time went by. By its clock its lease ran out, so
 * it takes its own lease back as a taker does, "with one record write naming
 * it, though no other runtime took the job" (architecture.md, "A taker fences
 * the record"). Its chores are due by the monotonic clock, and its job's own
 * clock (stall window, stalled timeout: the `clock.tick`s of job-feed.ts) is
 * the runtime's steady clock, which the step does not move: the job is not
 * written `stalled` while its task runs within its stall window (it was, at
 * its first tick after the step, and written again once the task answered).
 * Oracles: the job's record writes as the store hands them out.
 */
import { describe, expect, it } from "vitest";
import { heldWorker, leaseBenches, onOwnBench } from "../harness/lease-takeover.ts";
import { steppedClock } from "../harness/stepped-clock.ts";
import { waitUntil, within } from "../harness/wait.ts";

const leaseMs = 2000;
const stallAfterMs = 10_000;

describe.each(leaseBenches)(
  "a supervisor whose clock is stepped ahead past its lease and stall window ($name)",
  ({ make }) => {
    it(
      "a clock stepped ahead costs one record write",
      () =>
        onOwnBench(make, async (bench, heldGate) => {
          const release = heldGate();
          const queue = "q";
          await heldWorker(bench, queue, () => release.opened);
          const { clock, step } = steppedClock();
          const a = await bench.runtime({ clock, jobs: { leaseMs } });
          const job = await a.rt.jobs.submit({ queue, tasks: [1], lane: false, stallAfterMs });
          await waitUntil(async () => (await bench.rawLeaseHolder(job.id)) === a.broker.leases.holder, {
            timeoutMs: 10_000,
            message: "the job's lease held by A",
          });
          const history = await bench.followRecords();
          await waitUntil(async () => (await a.broker.getRecord(job.id))?.record.status === "running", {
            timeoutMs: 10_000,
            message: "the job's commit stored",
          });
          // The job's stall clock started at its commit, before this.
          const committedAt = performance.now();
          const before = (await a.broker.getRecord(job.id))?.revision ?? 0;
          step(stallAfterMs + 2 * leaseMs);
          await waitUntil(
            () => history.of(job.id).some(({ record }) => record.supervisor === a.broker.leases.holder),
            { timeoutMs: 15_000, message: "A's take of its own lease written" },
          );
          // The job's first tick after the step comes a second after its actor started (by the
          // timers, which the step did not move): a stall read from the step is written by then.
          // Half its stall window of real time since the commit, and no more: its task, silent for a
          // whole one, is a real stall.
          await waitUntil(() => history.of(job.id).some(({ record }) => record.status === "stalled"), {
            timeoutMs: Math.max(0, committedAt + stallAfterMs / 2 - performance.now()),
            message: "a stall written",
          }).catch(() => undefined);
          release.open();
          await waitUntil(() => history.of(job.id).some(({ record }) => record.status === "succeeded"), {
            timeoutMs: 20_000,
            message: "the job's end stored",
          });
          const since = history
            .of(job.id)
            .filter(({ revision }) => revision > before)
            .map(
              ({ revision, record }) =>
                `${revision} ${String(record.status)} ${JSON.stringify(record.counts)}`,
            );
          // The take (running, nothing answered), then the end.
          expect(
            since.map((line) => line.split(" ")[1]),
            `the record's writes since the step: ${since.join(", ")}`,
          ).toEqual(["running", "succeeded"]);
          expect(await within(job.done(), 20_000)).toMatchObject({ status: "succeeded", done: 1 });
          history.stop();
        }),
      90_000,
    );
  },
);
