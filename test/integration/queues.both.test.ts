/**
 * Queue controls (issue #19, items 4 and 5) through the public API, on the
 * memory broker (runtimes sharing one memory server) and on NATS (runtimes
 * on one nats-server): one runtime configures or pauses, the workers of the
 * others obey. The oracles are the handlers' own ledger (which index ran,
 * when it started and ended), a job's tasks as the server holds them
 * (delivered and not answered, still stored: the memory server's state, or
 * the nats-server's read by the test's own client) and, on NATS, the raw KV
 * entry and permits stream. The 3-process checks are in
 * queue-limits.processes.test.ts.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryLaneName, memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { type BrokerNames, brokerNames, laneConsumer } from "../../src/adapters/names.ts";
import { createHttpApi } from "../../src/api/http.ts";
import { createMemoryServer } from "../../src/testing.ts";
import { maxOverlap, mostStartsPerSecond } from "../harness/intervals.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { unansweredDeliveries } from "../harness/raw-consumers.ts";
import { storedCount } from "../harness/raw-results.ts";
import { memoryPool, natsPool, type RuntimePool } from "../harness/runtime-pools.ts";
import { delay, waitUntil } from "../harness/wait.ts";

/** A job's tasks as the server holds them, read past the runtimes. */
interface ServerTasks {
  /** Delivered and not answered yet (under a lease). */
  readonly unanswered: number;
  /** Still stored: not answered (an answered task leaves the stream). */
  readonly stored: number;
}

/** A job on its queue's lane (a small job of default settings) or with a consumer of its own. */
interface JobOnServer {
  readonly queue: string;
  readonly id: string;
  readonly lane: boolean;
}

const subjectOf = (n: BrokerNames, job: JobOnServer) =>
  job.lane ? n.laneSubject(job.queue, job.id) : n.tasksSubject(job.queue, job.id);

type Backend = RuntimePool & { tasksOf(job: JobOnServer): Promise<ServerTasks> };

const memoryBackend = (): Backend => {
  const server = createMemoryServer();
  const state = memoryServerState(server);
  return Object.assign(memoryPool({}, server), {
    tasksOf: async (job: JobOnServer) => {
      const consumer = state.tasks.consumer(job.lane ? memoryLaneName(job.queue) : job.id);
      if (!consumer) throw new Error(`no consumer of job ${job.id}`);
      return {
        unanswered: consumer.counts().held,
        stored: state.tasks.count(subjectOf(state.names, job)),
      };
    },
  });
};
const natsBackend = (server: NatsServerHandle): Backend =>
  Object.assign(natsPool(server.url), {
    tasksOf: async (job: JobOnServer) => ({
      unanswered: await unansweredDeliveries(server.url, job.queue, job.lane ? laneConsumer : job.id),
      stored: await storedCount(
        await jetstreamManager(raw),
        names.tasksStream(job.queue),
        subjectOf(names, job),
      ),
    }),
  });

const names = brokerNames("jetstate");
let nats: NatsServerHandle;
let raw: NatsConnection;
beforeAll(async () => {
  nats = await startNatsServer();
  raw = await connect({ servers: nats.url });
});
afterAll(async () => {
  await raw?.close();
  await nats?.dispose();
});

const backends: Array<{ name: string; make(): Backend }> = [
  { name: "memory", make: memoryBackend },
  { name: "nats", make: () => natsBackend(nats) },
];

describe.each(backends)("queue controls on $name", ({ name, make }) => {
  let backend: Backend;
  beforeAll(() => {
    backend = make();
  });
  afterAll(async () => {
    await backend.stop();
  });

  it("bad input is refused naming the field, and nothing is stored", async () => {
    const rt = await backend.runtime("admin-bad");
    for (const [limits, field] of [
      [{ ratePerSecond: 0 }, "limits.ratePerSecond"],
      [{ maxConcurrency: 2.5 }, "limits.maxConcurrency"],
      [{ maxConcurrency: "5" }, "limits.maxConcurrency"],
      [{ rate: 5 }, "limits.rate"],
      [{ permitLeaseMs: 4999 }, "limits.permitLeaseMs"],
      [{ permitLeaseMs: 3_600_001 }, "limits.permitLeaseMs"],
      [{ permitLeaseMs: 6000.5 }, "limits.permitLeaseMs"],
      [null, "limits"],
    ] as const) {
      await expect(rt.queues.configure("badq", limits as never)).rejects.toMatchObject({
        _tag: "InvalidArgument",
        field,
      });
    }
    await expect(rt.queues.pause("bad.queue")).rejects.toMatchObject({
      _tag: "InvalidArgument",
      field: "queue",
    });
    expect(await rt.queues.list()).toEqual([]);
    if (name === "nats") {
      const kv = await new Kvm(raw).open("jetstate_queues");
      expect(await kv.get("badq")).toBeNull();
    }
  });

  it("configure, pause and resume from one runtime are read by another", async () => {
    const [a, b] = [await backend.runtime("admin-a"), await backend.runtime("reader-b")];
    expect(await b.queues.get("fresh")).toEqual({ queue: "fresh", paused: false, updatedAt: 0 });
    await a.queues.configure("mail", { ratePerSecond: 50, maxConcurrency: 3 });
    expect(await b.queues.get("mail")).toMatchObject({
      queue: "mail",
      paused: false,
      ratePerSecond: 50,
      maxConcurrency: 3,
    });
    await a.queues.pause("mail");
    await a.queues.configure("mail", { ratePerSecond: null });
    const seen = await b.queues.get("mail");
    expect(seen).toMatchObject({ paused: true, maxConcurrency: 3 });
    expect(seen.ratePerSecond).toBeUndefined();
    await a.queues.resume("mail");
    expect((await b.queues.list()).map((q) => [q.queue, q.paused])).toEqual([["mail", false]]);
    if (name === "nats") {
      const kv = await new Kvm(raw).open("jetstate_queues");
      expect(JSON.parse((await kv.get("mail"))?.string() ?? "{}")).toMatchObject({
        v: 1,
        paused: false,
        maxConcurrency: 3,
      });
      // The pools as the server holds them: 3 concurrency permits, no rate permits.
      const jsm = await jetstreamManager(raw);
      const info = await jsm.streams.info("jetstate_permits", { subjects_filter: "jetstate.permits.mail.>" });
      expect(info.state.subjects).toEqual({ "jetstate.permits.mail.concurrency": 3 });
    }
  });

  it("permitLeaseMs is stored, read by another runtime, set on the pools, and lifted by null", async () => {
    const [a, b] = [await backend.runtime("admin-lease"), await backend.runtime("reader-lease")];
    await a.queues.configure("leased", {
      maxConcurrency: 2,
      ratePerSecond: 10,
      perTarget: { maxConcurrency: 1 },
    });
    const before = await b.queues.get("leased");
    expect(before.permitLeaseMs).toBeUndefined();
    await a.queues.configure("leased", { permitLeaseMs: 45_000 });
    // The target pools' consumers are made with the lease by their first taker: new pools.
    expect((await b.queues.get("leased")).perTarget?.round).not.toBe(before.perTarget?.round);
    expect(await b.queues.get("leased")).toMatchObject({
      maxConcurrency: 2,
      ratePerSecond: 10,
      permitLeaseMs: 45_000,
    });
    const ackWaits = async () => {
      const jsm = await jetstreamManager(raw);
      return Promise.all(
        ["concurrency", "rate"].map(async (kind) => {
          const info = await jsm.consumers.info("jetstate_permits", `${kind}_leased`);
          return (info.config.ack_wait ?? 0) / 1e6;
        }),
      );
    };
    // On the server: each pool's consumer holds a permit that long with no word from its holder.
    if (name === "nats") expect(await ackWaits()).toEqual([45_000, 45_000]);
    await a.queues.configure("leased", { permitLeaseMs: null });
    expect((await b.queues.get("leased")).permitLeaseMs).toBeUndefined();
    if (name === "nats") expect(await ackWaits()).toEqual([5000, 5000]);
  });

  it("maxConcurrency holds across the workers of two runtimes", async () => {
    const [admin, w1, w2] = [
      await backend.runtime("admin-c"),
      await backend.runtime("worker-c1"),
      await backend.runtime("worker-c2"),
    ];
    await admin.queues.configure("capped", { maxConcurrency: 3 });
    const intervals: Array<{ start: number; end: number }> = [];
    const handler = async () => {
      const start = performance.timeOrigin + performance.now();
      await delay(30);
      intervals.push({ start, end: performance.timeOrigin + performance.now() });
      return "ok";
    };
    const workers = [
      w1.workers.start({ queue: "capped", concurrency: 4, handler }),
      w2.workers.start({ queue: "capped", concurrency: 4, handler }),
    ];
    const job = await admin.jobs.submit({ queue: "capped", tasks: Array.from({ length: 40 }, (_, i) => i) });
    const done = await job.done();
    expect(done).toMatchObject({ status: "succeeded", done: 40, failed: 0 });
    expect(intervals).toHaveLength(40);
    const most = maxOverlap(intervals);
    expect(most).toBeLessThanOrEqual(3);
    // The cap, not something else, is the bound: 8 slots would run more than 3 at once.
    expect(most).toBe(3);
    for (const w of workers) await w.stop();
    // The admin's runtime watches the queue it configured while it lives (it writes the record
    // back should it vanish); stopped, it leaves no watch either.
    await admin.stop();
    if (name === "nats") {
      // Stopped workers leave no watch of theirs on the queue's key (other readers' scans come and go).
      const jsm = await jetstreamManager(raw);
      const watches = (await jsm.consumers.list("KV_jetstate_queues").next()).filter(
        (c) => (c.config.filter_subject ?? c.config.filter_subjects?.[0]) === "$KV.jetstate_queues.capped",
      );
      expect(watches).toEqual([]);
    }
  });

  it("ratePerSecond bounds starts in every 1-second window", async () => {
    const [admin, w1, w2] = [
      await backend.runtime("admin-r"),
      await backend.runtime("worker-r1"),
      await backend.runtime("worker-r2"),
    ];
    await admin.queues.configure("rated", { ratePerSecond: 10 });
    const starts: number[] = [];
    const handler = () => {
      starts.push(performance.timeOrigin + performance.now());
      return "ok";
    };
    const workers = [
      w1.workers.start({ queue: "rated", concurrency: 8, handler }),
      w2.workers.start({ queue: "rated", concurrency: 8, handler }),
    ];
    const job = await admin.jobs.submit({ queue: "rated", tasks: Array.from({ length: 25 }, (_, i) => i) });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 25, failed: 0 });
    starts.sort((a, b) => a - b);
    const most = mostStartsPerSecond(starts);
    expect(most).toBeLessThanOrEqual(10);
    // 25 tasks at 10 per second: at least two seconds from first to last start.
    expect((starts.at(-1) as number) - (starts[0] as number)).toBeGreaterThanOrEqual(2000);
    for (const w of workers) await w.stop();
  });

  it("pause stops every worker within a second; resume runs every task exactly once", async () => {
    const [admin, w1, w2] = [
      await backend.runtime("admin-p"),
      await backend.runtime("worker-p1"),
      await backend.runtime("worker-p2"),
    ];
    const ran: Array<{ index: number; start: number; worker: number }> = [];
    let running = 0;
    const handler = (worker: number) => async (task: { index: number }) => {
      ran.push({ index: task.index, start: performance.now(), worker });
      running++;
      await delay(20);
      running--;
      return task.index;
    };
    const pausable = [
      w1.workers.start({ queue: "pausable", concurrency: 3, handler: handler(0) }),
      w2.workers.start({ queue: "pausable", concurrency: 3, handler: handler(1) }),
    ];
    const workers = [
      ...pausable,
      // Each worker runtime also works an open queue of its own: the barrier below.
      w1.workers.start({ queue: "open-p1", handler: () => "ok" }),
      w2.workers.start({ queue: "open-p2", handler: () => "ok" }),
    ];
    const job = await admin.jobs.submit({
      queue: "pausable",
      tasks: Array.from({ length: 300 }, (_, i) => i),
    });
    await waitUntil(() => ran.length >= 20, { timeoutMs: 10_000, message: "some tasks ran" });
    await admin.queues.pause("pausable");
    const paused = performance.now();
    // When each worker says it heard the pause: from then on it starts nothing.
    const heard: number[] = [];
    await waitUntil(
      () => {
        for (const [k, w] of pausable.entries())
          if (heard[k] === undefined && w.stats().paused) heard[k] = performance.now();
        return heard.filter((at) => at !== undefined).length === pausable.length;
      },
      { timeoutMs: 10_000, intervalMs: 5, message: "every worker heard the pause" },
    );
    // The bound under test: heard within a second of the pause.
    expect(heard.map((at) => at - paused).filter((ms) => ms > 1000)).toEqual([]);
    const startedLate = () => ran.filter((r) => r.start > (heard[r.worker] as number));
    const countAtPause = ran.length;
    // Every task started before the pause has ended: the slots are free, and hundreds of tasks
    // wait: a worker that ignored the pause starts some at once. The barrier: jobs of open
    // queues submitted now, run by each worker runtime.
    await waitUntil(() => running === 0, {
      timeoutMs: 10_000,
      message: "the tasks started before the pause ended",
    });
    for (const queue of ["open-p1", "open-p2"])
      expect(await (await admin.jobs.submit({ queue, tasks: [1] })).done()).toMatchObject({
        status: "succeeded",
      });
    expect(startedLate()).toEqual([]);
    expect(ran.length).toBeLessThan(300);
    expect(job.snapshot().done).toBeLessThan(300);
    expect(countAtPause).toBe(ran.length);
    await admin.queues.resume("pausable");
    const done = await job.done();
    expect(done).toMatchObject({ status: "succeeded", done: 300, failed: 0, dead: 0 });
    // Every index once: none lost, none run twice.
    expect(ran.map((r) => r.index).sort((a, b) => a - b)).toEqual(Array.from({ length: 300 }, (_, i) => i));
    for (const w of workers) await w.stop();
  });

  it("a pause never spends a task's last delivery: with maxDeliver 1 every task still succeeds", async () => {
    const [admin, w1] = [await backend.runtime("admin-l"), await backend.runtime("worker-l1")];
    const ran: number[] = [];
    let running = 0;
    const worker = w1.workers.start({
      queue: "lastcall",
      concurrency: 2,
      handler: async (task) => {
        ran.push(task.index);
        running++;
        await delay(20);
        running--;
        return "ok";
      },
    });
    const job = await admin.jobs.submit({
      queue: "lastcall",
      maxDeliver: 1,
      tasks: Array.from({ length: 60 }, (_, i) => i),
    });
    await waitUntil(() => ran.length >= 10, { timeoutMs: 10_000, message: "some tasks ran" });
    await admin.queues.pause("lastcall");
    // Heard by the worker, then a task at its paused gate: delivered, not answered, in no handler,
    // as the server holds it (every task whose handler ran has left the stream).
    await waitUntil(() => worker.stats().paused, { timeoutMs: 10_000, message: "the pause heard" });
    await waitUntil(
      async () => {
        const { unanswered, stored } = await backend.tasksOf({ queue: "lastcall", id: job.id, lane: false });
        return running === 0 && 60 - stored === ran.length && unanswered > 0;
      },
      { timeoutMs: 10_000, message: "a task held at the paused gate" },
    );
    await admin.queues.resume("lastcall");
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 60, failed: 0, dead: 0 });
    expect([...ran].sort((a, b) => a - b)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    await worker.stop();
  });

  it("lifting a limit lets the tasks waiting for a permit start", async () => {
    const [admin, w1] = [await backend.runtime("admin-w"), await backend.runtime("worker-w1")];
    await admin.queues.configure("lifted", { maxConcurrency: 1 });
    const started: number[] = [];
    let unblock: () => void = () => undefined;
    const blocked = new Promise<void>((resolve) => {
      unblock = resolve;
    });
    const worker = w1.workers.start({
      queue: "lifted",
      concurrency: 3,
      handler: async (task) => {
        started.push(task.index);
        await blocked;
        return "ok";
      },
    });
    const job = await admin.jobs.submit({ queue: "lifted", tasks: [0, 1, 2] });
    await waitUntil(() => started.length === 1, { timeoutMs: 5000, message: "one task started" });
    // Delivered to the worker (its concurrency is 3) beside the one started, as the server counts
    // them: those not started wait for the one permit. Two at least: a pull that came while the
    // submit was publishing took one task, and the third then stayed in the stream (seen on the
    // memory broker once the submit ran as plain calls). Read before `started`: a start they skipped the permit for
    // would come before the server's answer.
    await waitUntil(
      async () => (await backend.tasksOf({ queue: "lifted", id: job.id, lane: true })).unanswered >= 2,
      { timeoutMs: 5000, message: "a task delivered and waiting for the permit" },
    );
    expect(started).toHaveLength(1);
    // The others wait for the one permit; the limit is lifted: they start without one.
    await admin.queues.configure("lifted", { maxConcurrency: null });
    await waitUntil(() => started.length === 3, { timeoutMs: 3000, message: "the waiting tasks started" });
    unblock();
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 3 });
    await worker.stop();
  });

  it("the HTTP pull API leases no task of a paused queue, and leases again after resume", async () => {
    const rt = await backend.runtime("http-p");
    const token = "token-queues-worker-0123456789";
    const api = createHttpApi(rt, { tokens: { [token]: "remote-worker" } });
    const reserve = async (): Promise<unknown[]> => {
      const response = await api.fetch(
        new Request("http://api/queues/remote/tasks", {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({ batch_size: 10 }),
        }),
      );
      expect(response.status).toBe(200);
      return ((await response.json()) as { tasks: unknown[] }).tasks;
    };
    await rt.queues.pause("remote");
    const job = await rt.jobs.submit({ queue: "remote", tasks: [1, 2, 3] });
    // Its three tasks stored, none taken, as the server holds them: an open queue would lease
    // them now. The settings are read first after the pause: no answer from before it is kept.
    const remote = { queue: "remote", id: job.id, lane: true };
    await waitUntil(async () => (await backend.tasksOf(remote)).stored === 3, {
      timeoutMs: 5_000,
      message: "the job's tasks stored",
    });
    expect(await reserve()).toEqual([]);
    expect(await reserve()).toEqual([]);
    expect(await backend.tasksOf(remote)).toEqual({ unanswered: 0, stored: 3 });
    await rt.queues.resume("remote");
    let got: unknown[] = [];
    await waitUntil(
      async () => {
        got = await reserve();
        return got.length > 0;
      },
      { timeoutMs: 5_000, message: "tasks leased after resume" },
    );
    expect(got.length).toBeGreaterThan(0);
  });
});
