/**
 * A redrive made while the job's supervisor (A) is ending it: its end is
 * written and cleaned up, its lease not released yet. The redrive (from B,
 * which never supervises a job it did not submit, as the CLI) reopens the
 * job and writes a run-out lease so that some supervisor takes it over;
 * A's lease is still there, and A's release, after, erased whatever the
 * key held up to A's revision. The reopened job must still be found and
 * ended: A's takeover pass takes it over once the redriven task ran. The
 * oracle: the record read from the server's store.
 *
 * Again with A's release landing between the redrive's enrol (which found
 * A's lease) and its read of that lease: the read found none, and nothing
 * was enrolled; the reopened job had no lease, for good.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a redrive while the job's end still holds its lease, on %s", (_kind, makeSide) => {
  it.each([
    ["released after the redrive", false],
    ["released between the redrive's enrol and its read of the lease", true],
  ])(
    "leaves a lease for the reopened job: it is taken over and ends (%s)",
    {
      timeout: 40_000,
    },
    async (_case, betweenReads) => {
      const side = await makeSide();
      const release = gate();
      let releasing = false;
      let released: Promise<unknown> | undefined;
      const holdRelease = (inner: Broker) =>
        spiedBroker(inner, (name, _n, _args, call) => {
          if (name !== "leases.release" || releasing) return call();
          releasing = true;
          released = release.opened.then(call);
          return released;
        }).broker;
      // B's read of the lease waits for A's release to land first.
      const releaseBeforeRead = (inner: Broker) =>
        spiedBroker(inner, (name, _n, _args, call) => {
          if (name !== "leases.get" || !betweenReads) return call();
          release.open();
          return Promise.resolve(released).then(call);
        }).broker;
      const a = await side.runtime("a", holdRelease);
      const b = await side.runtime("b", releaseBeforeRead, false);
      const flaky = flakyWorker(a, "leaserelease");
      const worker = flaky.start();
      try {
        const job = await submitDying(a, "leaserelease");
        expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
        await waitUntil(() => releasing, { timeoutMs: 10_000, message: "A releasing its lease, held" });
        flaky.mend();
        await b.jobs.redrive(job.id);
        release.open();
        await waitUntil(async () => (await side.stored(job.id))?.status === "succeeded", {
          timeoutMs: 20_000,
          message: "the reopened job taken over and ended",
        });
        expect(await side.stored(job.id)).toMatchObject({ counts: { done: 2, failed: 0, dead: 0 } });
      } finally {
        release.open();
        await worker.stop();
        await b.stop();
        await a.stop();
        await side.dispose();
      }
    },
  );
});
