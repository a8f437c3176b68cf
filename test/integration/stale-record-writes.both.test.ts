/**
 * A job's record write heard late, after a newer one was read, on both
 * brokers. The history of one idempotency key: a submit dies after its
 * record's create; the reaper rolls it back, on a clock an hour ahead (as
 * another host's may be); a second submit takes the key over and commits.
 * Runtime W's record watch is held meanwhile, as a slow watch is, and hands
 * W that history only after W read the job's record (a `get`, or the read
 * of a takeover). The rollback's time is later than every write after it:
 * a reader that orders the writes by their time takes it for the job's end.
 * The oracles: the handler's ledger and the record as the server holds it,
 * read raw, never W's view of itself.
 */
import { StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { JobRegistry } from "../../src/api/jobs.ts";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore, type RuntimeCore } from "../../src/api/runtime-core.ts";
import { SimulatedCrash, SubmitStep } from "../../src/effects/submit-job.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { decodeRecord } from "../../src/kernel/job-record-codec.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { startNatsServer } from "../harness/nats-server.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { delay, gate, waitUntil, within } from "../harness/wait.ts";

const leaseMs = 600;

interface Side {
  runtime(options: { wrap?: (broker: Broker) => Broker; takeOver: boolean }): Promise<Runtime>;
  /** A runtime core and broker on the server, for a registry made by hand. */
  parts(holder: string): Promise<{ core: RuntimeCore; broker: Broker; stop(): Promise<void> }>;
  /** The record as the server holds it, read raw. */
  record(id: string): Promise<JobRecord | undefined>;
  dispose(): Promise<void>;
}

const jobsOf = (takeOver: boolean) => ({ leaseMs, takeOver, cleanupIntervalMs: 0, reapIntervalMs: 3600_000 });

const memorySide = async (): Promise<Side> => {
  const server = createMemoryServer();
  const runtimes: Runtime[] = [];
  return {
    runtime: async ({ wrap = (b) => b, takeOver }) => {
      const rt = await createRuntime({
        logger: silentLogger(),
        jobs: jobsOf(takeOver),
        broker: wrap(createMemoryBroker({ server })),
      });
      runtimes.push(rt);
      return rt;
    },
    parts: async (holder) => {
      const core = await createRuntimeCore({ logger: silentLogger() }, { connect: false });
      return { core, broker: createMemoryBroker({ server, holder }), stop: () => core.stop() };
    },
    record: async (id) => {
      const entry = memoryServerState(server).records.get("test.read", id);
      return entry?.value === undefined ? undefined : decodeRecord(entry.value);
    },
    dispose: async () => {
      for (const rt of runtimes.reverse()) await rt.stop();
      server.close();
    },
  };
};

const natsSide = async (): Promise<Side> => {
  const server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  const kv = await new Kvm(nc).create("jetstate_jobs", { history: 1, storage: StorageType.File });
  const runtimes: Runtime[] = [];
  return {
    runtime: async ({ wrap = (b) => b, takeOver }) => {
      const options = { servers: server.url, logger: silentLogger(), jobs: jobsOf(takeOver) };
      const core = await createRuntimeCore(options);
      const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: `rt${runtimes.length}` });
      const rt = await createRuntime({ ...options, broker: wrap(broker) });
      runtimes.push(rt);
      return rt;
    },
    parts: async (holder) => {
      const core = await createRuntimeCore({ servers: server.url, logger: silentLogger() });
      const broker = createNatsBroker(core, { retentionMs: 3600_000, holder });
      return {
        core,
        broker,
        stop: async () => {
          await core.stop();
          await broker.close();
        },
      };
    },
    record: async (id) => {
      const entry = await kv.get(id);
      return entry?.operation === "PUT" ? decodeRecord(entry.string()) : undefined;
    },
    dispose: async () => {
      for (const rt of runtimes.reverse()) await rt.stop().catch(() => undefined);
      await nc.close();
      await server.dispose();
    },
  };
};

/** A broker whose record watch hands nothing over until `release()`, then all it held, in order. */
const heldWatch = () => {
  let released = false;
  const held: Array<() => void> = [];
  const wrap = (inner: Broker): Broker =>
    spiedBroker(inner, (key, _n, args, call) => {
      if (key === "watchRecordChanges") {
        const onRecord = args[0] as (record: JobRecord, revision: number) => void | Promise<void>;
        args[0] = (record: JobRecord, revision: number) => {
          if (released) return onRecord(record, revision);
          held.push(() => void onRecord(record, revision));
        };
      }
      return call();
    }).broker;
  return {
    wrap,
    held: () => held.length,
    release: () => {
      for (const deliver of held.splice(0)) deliver();
      released = true;
    },
  };
};

/**
 * A broker whose record reads that `holds` picks (by job id and how many reads of it this is)
 * are made at once and answered only once `open()` is called; `reads(id)` counts the reads of
 * a job (of every job without one).
 */
const heldReads = (holds: (id: string, nth: number) => boolean) => {
  const counts = new Map<string, number>();
  const read = gate();
  const wrap = (inner: Broker): Broker =>
    spiedBroker(inner, (key, _n, args, call) => {
      if (key !== "getRecord") return call();
      const id = args[0] as string;
      const nth = (counts.get(id) ?? 0) + 1;
      counts.set(id, nth);
      if (!holds(id, nth)) return call();
      return (call() as Promise<unknown>).then(async (found) => {
        await read.opened;
        return found;
      });
    }).broker;
  const reads = (id?: string) =>
    id === undefined ? [...counts.values()].reduce((a, b) => a + b, 0) : (counts.get(id) ?? 0);
  return { wrap, reads, open: read.open };
};

/** A worker of `queue` on `rt` that writes down each task it runs: the ledger. */
const ledgerWorker = (rt: Runtime, queue: string): string[] => {
  const handled: string[] = [];
  rt.workers.start<string, string>({
    queue,
    handler: (task) => {
      handled.push(task.payload);
      return "ok";
    },
  });
  return handled;
};

/**
 * The key's history up to the second submit's commit: a submit that died after its
 * record's create, its rollback by a reaper whose clock is an hour ahead, then `b`'s
 * submit of the key, which takes the rolled-back record over. Resolves with `b`'s job.
 */
const staleHistory = async (side: Side, b: Runtime, queue: string, key: string) => {
  const dead = await side.parts("dead");
  const registry = new JobRegistry(dead.core, dead.broker, {
    reapIntervalMs: 3600_000,
    reapGraceMs: 10_000,
    leaseMs,
    takeOver: false,
    submitHooks: {
      afterStep: (at) => {
        if (at === SubmitStep.recordCreated) throw new SimulatedCrash(`process died after ${at}`);
      },
    },
  });
  await expect(registry.submit({ queue, tasks: ["t"], idempotencyKey: key })).rejects.toThrow("process died");
  await registry.stop();
  await dead.stop();
  const report = await partsOf(b).jobs.reap(() => Date.now() + 3600_000);
  expect(report.rolledBack).toHaveLength(1);
  const job = await b.jobs.submit({ queue, tasks: ["t"], idempotencyKey: key });
  return { job, rollback: report.rolledBack[0]! };
};

describe.each([
  { name: "memory", start: memorySide },
  { name: "nats", start: natsSide },
])("a record write heard late, on $name", ({ start }) => {
  it("a watcher's get: the rollback before the job's submit does not end it", async () => {
    const side = await start();
    try {
      const watch = heldWatch();
      const w = await side.runtime({ wrap: watch.wrap, takeOver: false });
      const b = await side.runtime({ takeOver: false });
      const queue = "staleget";
      const { job, rollback } = await staleHistory(side, b, queue, "k1");
      expect(job.id).toBe(rollback);
      const seen = await w.jobs.get(job.id);
      expect(seen).toBeDefined();
      // The history reaches W now, after its read: the create, the rollback, the takeover.
      await waitUntil(async () => watch.held() >= 3, {
        timeoutMs: 10_000,
        message: "W's watch held the history",
      });
      watch.release();
      const handled = ledgerWorker(b, queue);
      expect(await within(seen!.done(), 10_000)).toMatchObject({ status: "succeeded" });
      expect(handled).toEqual(["t"]);
      expect(await side.record(job.id)).toMatchObject({ status: "succeeded", phase: "committed" });
    } finally {
      await side.dispose();
    }
  });

  it("a worker running the job's task: the rollback heard late does not abort its handler", async () => {
    const side = await start();
    try {
      const watch = heldWatch();
      const x = await side.runtime({ wrap: watch.wrap, takeOver: false });
      const b = await side.runtime({ takeOver: false });
      const queue = "staleworker";
      const { job } = await staleHistory(side, b, queue, "k3");
      const held = gate();
      const started: string[] = [];
      const aborted: boolean[] = [];
      // It hears of the job from its lane task (the job's record read then), not from its watch.
      x.workers.start<string, string>({
        queue,
        handler: async (task, ctx) => {
          started.push(task.payload);
          await held.opened;
          aborted.push(ctx.signal.aborted);
          return "ok";
        },
      });
      await waitUntil(() => started.length === 1, { timeoutMs: 10_000, message: "the task started" });
      await waitUntil(async () => watch.held() >= 3, {
        timeoutMs: 10_000,
        message: "X's watch held the history",
      });
      watch.release();
      // The history handed over (at once: the release calls the watch's reader), then the handler returns.
      held.open();
      expect(await within(job.done(), 10_000)).toMatchObject({ status: "succeeded" });
      expect(started).toEqual(["t"]);
      expect(aborted).toEqual([false]);
    } finally {
      await side.dispose();
    }
  });

  it("a worker reading a lane task's job as its end is written: the end it heard meanwhile wins", async () => {
    const side = await start();
    try {
      const watch = heldWatch();
      // X's read of the job (for its lane task) is made at once, and answered once released.
      const read = heldReads(() => true);
      const x = await side.runtime({ wrap: (inner) => read.wrap(watch.wrap(inner)), takeOver: false });
      const b = await side.runtime({ takeOver: false });
      const queue = "stalelaneread";
      const job = await b.jobs.submit({ queue, tasks: ["t"] });
      const handled = ledgerWorker(x, queue);
      await waitUntil(() => read.reads() >= 1, { timeoutMs: 10_000, message: "X read the lane task's job" });
      await job.cancel("no longer wanted");
      // The job's create and its end, held by X's watch, then handed over before the read's answer.
      await waitUntil(async () => watch.held() >= 2, {
        timeoutMs: 10_000,
        message: "X's watch held the end",
      });
      watch.release();
      read.open();
      // Nothing marks a task not run: the time a run takes here many times over.
      await delay(300);
      expect(handled).toEqual([]);
    } finally {
      await side.dispose();
    }
  });

  it("a get whose read is answered after another runtime's cancel was heard: its handle ends", async () => {
    const side = await start();
    try {
      const b = await side.runtime({ takeOver: false });
      const queue = "stalegetcancel";
      const job = await b.jobs.submit({ queue, tasks: ["t", "u"] });
      // W's first read of the job is made at once, and answered once released.
      const read = heldReads((id, nth) => id === job.id && nth === 1);
      const w = await side.runtime({ wrap: read.wrap, takeOver: true });
      const cancelHeard = gate();
      partsOf(w).jobs.onRecordChange((record) => {
        if (record.id === job.id && record.status === "failed") cancelHeard.open();
      });
      const placed = gate();
      partsOf(w).jobs.records.listen({ onRecord: () => undefined, onPlaced: () => placed.open() });
      await placed.opened;
      const opening = w.jobs.get(job.id);
      await waitUntil(() => read.reads(job.id) >= 1, { timeoutMs: 10_000, message: "W read the job" });
      await job.cancel("no longer wanted");
      // W's watch hands the cancel over while no actor of W watches the job yet.
      expect(await within(cancelHeard.opened, 10_000)).not.toBe("never");
      read.open();
      const handle = await opening;
      expect(await within(handle!.done(), 10_000)).toMatchObject({
        status: "failed",
        reason: "cancelled: no longer wanted",
      });
      expect(await side.record(job.id)).toMatchObject({ status: "failed" });
    } finally {
      await side.dispose();
    }
  });

  it("a takeover: the supervisor that took the job over goes on to write its end", async () => {
    const side = await start();
    try {
      const watch = heldWatch();
      const w = await side.runtime({ wrap: watch.wrap, takeOver: true });
      const b = await side.runtime({ takeOver: false });
      const queue = "staletake";
      const { job } = await staleHistory(side, b, queue, "k2");
      // Its supervisor stops: its lease given back, W's next takeover pass takes the job over.
      await b.stop();
      await waitUntil(async () => partsOf(w).jobs.watchedSnapshot(job.id) !== undefined, {
        timeoutMs: 10_000,
        message: "W took the job over",
      });
      await waitUntil(async () => watch.held() >= 3, {
        timeoutMs: 10_000,
        message: "W's watch held the history",
      });
      watch.release();
      // A worker elsewhere answers the task; only W, its supervisor now, writes the end.
      const x = await side.runtime({ takeOver: false });
      const handled = ledgerWorker(x, queue);
      await waitUntil(async () => (await side.record(job.id))?.status === "succeeded", {
        timeoutMs: 10_000,
        message: "the job's end written by W",
      });
      expect(handled).toEqual(["t"]);
    } finally {
      await side.dispose();
    }
  });
});
