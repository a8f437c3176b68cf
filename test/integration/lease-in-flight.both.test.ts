/**
 * A supervision lease write whose answer comes late, or never, on either
 * broker. The oracles: the job's record and its lease as the server stores
 * them (the memory server's state, or the buckets through a nats.js client
 * of their own), not as a runtime says.
 *
 * - A takeover's lease take stored but not answered (a timeout, the
 *   connection lost on the way back) left a lease naming the runtime that
 *   had no actor for the job. While that runtime's heartbeat lived (it
 *   supervised another job), every runtime read the lease as held: nobody
 *   supervised the job, whose end was never written. It is taken over at the
 *   next pass now.
 * - A watcher's lease take in flight when its job ended (its supervisor
 *   wrote the end and released the lease) landed after the release: a lease
 *   for an ended job, kept alive by the watcher's heartbeat for as long as
 *   it ran. It is released once the take is answered now.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { TransientBrokerError } from "../../src/kernel/errors.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { memorySide, natsSide } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { delay, gate, waitUntil } from "../harness/wait.ts";

const leaseMs = 1000;

const heldWorker = (rt: Runtime, queue: string, opened: Promise<void>) =>
  rt.workers.start<number, number>({
    queue,
    handler: async (task) => {
      await opened;
      return task.payload;
    },
  });

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a lease write answered late, on %s", (_kind, makeSide) => {
  it("a takeover's take stored but not answered: the job is taken over at the next pass", async () => {
    const side = await makeSide({ leaseMs });
    const release = gate();
    let lost = 0;
    let orphan = "";
    // Stored, its answer lost on the way back: the server has B's lease, B's broker never heard
    // of it, and the caller sees a transient failure.
    const loseAnswer = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        if (name !== "leases.acquire" || args[0] !== orphan || lost > 0) return call();
        lost++;
        return side
          .writeLease(orphan, { holder: inner.leases.holder, until: Date.now() + leaseMs })
          .then(() => {
            throw new TransientBrokerError({ message: "the answer was lost", operation: "lease.acquire" });
          });
      }).broker;
    const workers = await side.runtime("w", undefined, false);
    const a = await side.runtime("a", undefined, false);
    const b = await side.runtime("b", loseAnswer);
    const worker = heldWorker(workers, "orphan", release.opened);
    try {
      // B supervises a job of its own all along (no worker serves its queue): its heartbeat lives.
      const own = await b.jobs.submit({ queue: "orphan_own", tasks: [1], lane: false });
      const job = await a.jobs.submit({ queue: "orphan", tasks: [1, 2], lane: false });
      orphan = job.id;
      // A stops: its lease is given back, and B's pass takes the job over (its first take's answer lost).
      await a.stop();
      await waitUntil(() => lost === 1, {
        timeoutMs: 10_000,
        message: "B's take of the job stored, unanswered",
      });
      release.open();
      // B's passes run every leaseMs/2: taken over within a few leases, its answers counted.
      await waitUntil(async () => (await side.stored(job.id))?.status === "succeeded", {
        timeoutMs: 4 * leaseMs,
        message: "the job's end written by a supervisor",
      });
      expect(await side.stored(job.id)).toMatchObject({ counts: { done: 2 } });
      expect(await side.stored(own.id)).not.toMatchObject({ status: "succeeded" });
    } finally {
      release.open();
      await worker.stop();
      await Promise.allSettled([a.stop(), b.stop(), workers.stop()]);
      await side.dispose();
    }
  }, 30_000);

  it("a takeover pass does not wait for a submit of its own runtime still in flight", async () => {
    const side = await makeSide({ leaseMs });
    const release = gate();
    const unstick = gate();
    let publishing = false;
    // A's submits on `stuck` hang in their publish until the test ends: their leases name A.
    const stuckPublish = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        if (name !== "publishTasks" || (args[0] as JobRecord).queue !== "stuck") return call();
        publishing = true;
        return unstick.opened.then(call);
      }).broker;
    const workers = await side.runtime("w", undefined, false);
    const d = await side.runtime("d", undefined, false);
    const a = await side.runtime("a", stuckPublish);
    const worker = heldWorker(workers, "orphan_d", release.opened);
    try {
      const stuck = a.jobs.submit({ queue: "stuck", tasks: [1], lane: false }).catch(() => undefined);
      await waitUntil(() => publishing, { timeoutMs: 10_000, message: "A's submit publishing, held" });
      const job = await d.jobs.submit({ queue: "orphan_d", tasks: [1, 2], lane: false });
      // D stops: its lease is given back, for A's next pass to take the job over.
      await d.stop();
      release.open();
      await waitUntil(async () => (await side.stored(job.id))?.status === "succeeded", {
        timeoutMs: 4 * leaseMs,
        message: "the orphan's end written by A while its own submit hangs",
      });
      unstick.open();
      await stuck;
    } finally {
      release.open();
      unstick.open();
      await worker.stop();
      await Promise.allSettled([a.stop(), d.stop(), workers.stop()]);
      await side.dispose();
    }
  }, 30_000);

  it("a watcher's take in flight at the job's end: no lease is left", async () => {
    const side = await makeSide({ leaseMs });
    const release = gate();
    let jobId = "";
    let held = 0;
    let watcherEnded = false;
    let bLeases: Broker["leases"] | undefined;
    // The watcher's first take of the job waits for the job's end and its lease's release.
    const lateTake = (inner: Broker) => {
      bLeases = inner.leases;
      return spiedBroker(inner, (name, _n, args, call) => {
        if (name !== "leases.acquire" || args[0] !== jobId || held > 0) return call();
        held++;
        return waitUntil(async () => watcherEnded && (await side.storedLease(jobId)) === undefined, {
          timeoutMs: 10_000,
          message: "the job ended, its watcher too, and its lease released",
        }).then(call);
      }).broker;
    };
    const a = await side.runtime("a", undefined, false);
    const b = await side.runtime("b", lateTake);
    const worker = heldWorker(a, "late_take", release.opened);
    try {
      // B supervises a job of its own all along (no worker serves its queue): its heartbeat lives.
      const own = await b.jobs.submit({ queue: "late_take_own", tasks: [1], lane: false });
      const job = await a.jobs.submit({ queue: "late_take", tasks: [1], lane: false });
      jobId = job.id;
      const watched = await b.jobs.get(job.id);
      // B's actor for the job ends once it hears the end A wrote (its handle's `done()` then).
      void watched
        ?.done()
        .then(() => delay(100))
        .then(() => {
          watcherEnded = true;
        });
      await waitUntil(() => held === 1, {
        timeoutMs: 10_000,
        message: "B's watcher tried to take the lease",
      });
      release.open();
      expect(await job.done()).toMatchObject({ status: "succeeded" });
      // The take lands after the release; B's actor has ended by then.
      await delay(3 * leaseMs);
      expect(await side.storedLease(job.id)).toBeUndefined();
      expect(bLeases?.supervises(job.id)).toBe(false);
      expect(await side.stored(own.id)).not.toMatchObject({ status: "succeeded" });
    } finally {
      release.open();
      await worker.stop();
      await Promise.allSettled([a.stop(), b.stop()]);
      await side.dispose();
    }
  }, 30_000);
});
