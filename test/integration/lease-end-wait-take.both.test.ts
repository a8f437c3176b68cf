/**
 * A watcher that decided a job's end while another runtime held its lease,
 * on both brokers: it waits for the end or for the lease (`untilSupervising`,
 * api/job-end-wait.ts). The supervisor's end is held back and its lease runs
 * out; the watcher takes the lease, and its take's write of the record fails
 * (the store refuses its record writes). The lease is given back and the
 * wait goes on: it went on at once, reading the record, taking the lease,
 * failing the write and giving the lease back again in a loop against the
 * server, for as long as the writes failed. Oracle: when each of the
 * watcher's record writes was tried.
 */
import { describe, expect, it } from "vitest";
import { heldWorker, holdWrites, leaseBenches, onOwnBench } from "../harness/lease-takeover.ts";
import { waitUntil, within } from "../harness/wait.ts";

const leaseMs = 1000;
/** The wait's pause between two turns with this lease (`min(500, leaseMs / 4)`). */
const pauseMs = 250;
const tries = 10;

describe.each(leaseBenches)(
  "a watcher waiting for a job's end whose take of the record fails ($name)",
  ({ make }) => {
    it(
      "pauses between its tries",
      () =>
        onOwnBench(make, async (bench, heldGate) => {
          const release = heldGate();
          const aGo = heldGate();
          const queue = "q";
          await heldWorker(bench, queue, () => release.opened);
          const a = await bench.runtime({ jobs: { leaseMs, takeOver: false } });
          const job = await a.rt.jobs.submit({ queue, tasks: [1], lane: false, stallAfterMs: 60_000 });
          await waitUntil(async () => (await bench.rawLeaseHolder(job.id)) === a.broker.leases.holder, {
            timeoutMs: 10_000,
            message: "the job's lease held by A",
          });
          const w = await bench.runtime({ jobs: { leaseMs } });
          const watched = await w.rt.jobs.get(job.id);
          expect(watched, "W's handle of the job").toBeDefined();
          // Each of W's writes of the record while it runs (its take's) fails, the moment it is tried
          // noted; a turn of the event loop each, so a loop of them does not starve the timers.
          const tried: number[] = [];
          w.faults.before("progress", async () => {
            tried.push(performance.now());
            await new Promise((resolve) => setImmediate(resolve));
          });
          w.faults.fail("progress", Number.POSITIVE_INFINITY, job.id);
          // A decides the end and writes it: held back, and its lease renewed no more.
          const aWriting = holdWrites(a, "finalize", aGo.opened, "each");
          release.open();
          expect(await within(aWriting, 20_000), "A writing the job's end").not.toBe("never");
          a.faults.fail("lease", Number.POSITIVE_INFINITY);
          await waitUntil(() => tried.length >= tries, {
            timeoutMs: 30_000,
            message: () => `W's takes of the record tried ${tries} times (${tried.length} so far)`,
          });
          const spanMs = (tried[tries - 1] ?? 0) - (tried[0] ?? 0);
          // Nine pauses at most, and tries of the lease keeper's between them, make the span; a loop
          // made the ten tries within a few milliseconds.
          expect(spanMs, `the span of W's first ${tries} takes (ms)`).toBeGreaterThan(3 * pauseMs);
          // Healed, and A's end let go: stored, W's wait reads it.
          w.faults.heal("progress");
          aGo.open();
          expect(await within(watched!.done(), 20_000)).toMatchObject({ status: "succeeded", done: 1 });
        }),
      60_000,
    );
  },
);
