/**
 * A supervisor whose clock is set back a minute while it holds a job's lease
 * (NTP stepping a clock that ran ahead), whose lease store then fails it
 * (every renewal and heartbeat: `faultyBroker`'s `lease`) while the rest of
 * the server answers, on both brokers. Another runtime takes the job over
 * once the lease ran out by the server's time. Held by the `until` it wrote
 * before the step, a minute on, the first went on as the job's supervisor
 * and wrote the job's end beside its taker. Oracles: the lease as stored,
 * and a ledger of the first runtime's writes of the job's end.
 */
import { describe, expect, it } from "vitest";
import { realClock } from "../../src/kernel/clock.ts";
import { memoryBench, natsBench } from "../harness/fault-runtimes.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const leaseMs = 2000;

describe.each([
  { name: "memory", make: memoryBench },
  { name: "nats", make: natsBench },
])("a lease holder whose clock is set back, its renewals then failing ($name)", ({ make }) => {
  it("stops supervising a lease after its last renewal: its taker alone writes the job's end", async () => {
    const bench = await make();
    const release = gate();
    try {
      const queue = "q";
      const w = await bench.runtime({ roles: ["worker"] });
      w.rt.workers.start({
        queue,
        handler: async () => {
          await release.opened;
          return 1;
        },
      });
      let aheadMs = 60_000;
      const a = await bench.runtime({
        clock: { ...realClock, now: () => Date.now() + aheadMs },
        jobs: { leaseMs, takeOver: false },
      });
      /** A's writes of the job's end (onto an end recorded or not), in order. */
      const ends: string[] = [];
      a.faults.before("finalize", (jobId) => void ends.push(`finalize ${jobId}`));
      a.faults.before("raise", (jobId) => void ends.push(`raise ${jobId}`));
      const job = await a.rt.jobs.submit({ queue, tasks: [1], lane: false, stallAfterMs: 60_000 });
      await waitUntil(async () => (await bench.rawLeaseHolder(job.id)) === a.broker.leases.holder, {
        timeoutMs: 10_000,
        message: "the job's lease held by A",
      });
      // NTP sets A's clock right; then its lease store fails it: its renewals stop.
      aheadMs = 0;
      a.faults.fail("lease", Number.POSITIVE_INFINITY);
      const b = await bench.runtime({ jobs: { leaseMs } });
      await waitUntil(async () => (await bench.rawLeaseHolder(job.id)) === b.broker.leases.holder, {
        timeoutMs: 20_000,
        message: "the job's lease taken over by B",
      });
      release.open();
      expect(await within(job.done(), 20_000)).toMatchObject({ status: "succeeded", done: 1 });
      expect(ends, "A's writes of the job's end after B took it over").toEqual([]);
    } finally {
      release.open();
      await bench.dispose();
    }
  }, 90_000);
});
