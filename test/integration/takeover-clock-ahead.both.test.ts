/**
 * A supervising runtime on a host whose clock runs a minute ahead of the
 * others' (and of the server's), on both brokers. A job's lease says until
 * when its holder renews it, by the holder's clock; read by the clock of a
 * runtime a minute ahead, every live lease had run out, and that runtime
 * took every job over from its live supervisor at its first takeover pass:
 * two supervisors of one job. The barrier: a job whose supervisor stopped
 * (its lease given back, run out by every clock) is taken over by the
 * runtime ahead at a pass that read every lease. Oracles: the leases as
 * stored, the tasks the handler ran, the job's end.
 */
import { describe, expect, it } from "vitest";
import { clockBackends, offsetBy, untilLeaseHeldBy } from "../harness/clock-backends.ts";
import { gate, waitUntil } from "../harness/wait.ts";

const leaseMs = 2000;

describe.each(clockBackends())("a takeover by a runtime whose clock runs ahead ($name)", ({ make }) => {
  it("leaves a live supervisor's job to it, and takes over one whose supervisor stopped", async () => {
    const backend = make();
    const release = gate();
    try {
      const queue = "q";
      const ran: string[] = [];
      const w = await backend.runtime("w", { roles: ["worker"] });
      w.workers.start<{ n: number; hold: boolean }, number>({
        queue,
        concurrency: 4,
        handler: async (task) => {
          ran.push(`${task.jobId}/${task.index}`);
          if (task.payload.hold) await release.opened;
          return task.payload.n;
        },
      });
      // Live: its supervisor renews its lease for as long as the test runs.
      const live = await backend.runtime("live", { jobs: { leaseMs, takeOver: false } });
      const job = await live.jobs.submit({ queue, tasks: [{ n: 1, hold: true }], lane: false });
      await waitUntil(async () => (await backend.leases()).some((l) => l.jobId === job.id), {
        timeoutMs: 10_000,
        message: "the live job's lease stored",
      });
      // The runtime a minute ahead, then a job whose supervisor stops (its lease given back).
      await backend.runtime("ahead", { clock: offsetBy(60_000), jobs: { leaseMs } });
      const gone = await backend.runtime("gone", { jobs: { leaseMs, takeOver: false } });
      const orphan = await gone.jobs.submit({ queue, tasks: [{ n: 2, hold: true }], lane: false });
      await gone.stop();
      await untilLeaseHeldBy(backend, orphan.id, "ahead");
      // The same pass read the live job's lease: still its supervisor's.
      const leases = await backend.leases();
      expect(leases.find((l) => l.jobId === job.id)?.holder).toMatch(/^live/);
      release.open();
      expect(await job.done()).toMatchObject({ status: "succeeded", done: 1, failed: 0, dead: 0 });
      expect(ran.filter((r) => r.startsWith(job.id))).toEqual([`${job.id}/0`]);
    } finally {
      release.open();
      await backend.stop();
    }
  }, 60_000);
});
