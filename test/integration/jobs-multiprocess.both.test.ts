/**
 * Jobs seen from more than one runtime on the same server (issue #12): an
 * idempotent resubmit, `get`, `cancel` and the record itself, on the memory
 * broker (runtimes sharing one `createMemoryServer`) and on NATS (runtimes on
 * one nats-server). The oracles are the handlers' own ledger and the job
 * record read raw from the server (the memory server's KV, or a KV client of
 * the test's own on NATS), never a runtime's view of itself.
 */

import { StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InspectionEvent } from "xstate";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createHttpApi } from "../../src/api/http.ts";
import { JobRegistry } from "../../src/api/jobs.ts";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore, type RuntimeCore } from "../../src/api/runtime-core.ts";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import type { Clock } from "../../src/kernel/clock.ts";
import { PermanentBrokerError } from "../../src/kernel/errors.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { decodeRecord } from "../../src/kernel/job-record-codec.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import {
  createMemoryBroker,
  createMemoryServer,
  createTestRuntime,
  ManualClock,
  type MemoryServer,
} from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, gate, waitUntil } from "../harness/wait.ts";

const timeoutMs = 10_000;

interface Backend {
  readonly name: string;
  /** A new runtime on the shared server. */
  runtime(options?: {
    takeOver?: boolean;
    leaseMs?: number;
    clock?: Clock;
    inspect?: { inspect(event: InspectionEvent): void };
  }): Promise<Runtime>;
  /** The job record as the server holds it, read raw. */
  record(id: string): Promise<JobRecord | undefined>;
  /** Every status written to any job record, in order, read raw: `[jobId, status]`. */
  readonly written: Array<readonly [string, string]>;
  /** A runtime core and broker on the shared server, on this clock, for a `Jobs` made by hand. */
  parts(clock: Clock, holder: string): Promise<{ core: RuntimeCore; broker: Broker; stop(): Promise<void> }>;
}

const backends: Array<{ name: string; start(): Promise<Backend & { stop(): Promise<void> }> }> = [
  {
    name: "memory",
    async start() {
      const server: MemoryServer = createMemoryServer();
      const state = memoryServerState(server);
      const runtimes: Runtime[] = [];
      const written: Array<readonly [string, string]> = [];
      state.records.watch((entry) => {
        if (entry.value !== undefined) written.push([entry.key, decodeRecord(entry.value).status]);
      });
      return {
        name: "memory",
        written,
        async parts(clock, holder) {
          const core = await createRuntimeCore({ logger: silentLogger(), clock }, { connect: false });
          const broker = createMemoryBroker({ server, holder });
          return { core, broker, stop: () => core.stop() };
        },
        async runtime({ inspect, clock, ...jobs } = {}) {
          const rt = await createTestRuntime({
            broker: createMemoryBroker({ server }),
            ...(inspect ? { inspect } : {}),
            ...(clock ? { clock } : {}),
            jobs: { leaseMs: 30_000, ...jobs },
          });
          runtimes.push(rt);
          return rt;
        },
        async record(id) {
          const entry = state.records.get("test.read", id);
          return entry?.value === undefined ? undefined : decodeRecord(entry.value);
        },
        async stop() {
          for (const rt of runtimes.reverse()) await rt.stop();
          server.close?.();
        },
      };
    },
  },
  {
    name: "nats",
    async start() {
      const server: NatsServerHandle = await startNatsServer();
      const nc: NatsConnection = await connect({ servers: server.url });
      const runtimes: Runtime[] = [];
      const kv = new Kvm(nc).create("jetstate_jobs", { history: 1, storage: StorageType.File });
      const written: Array<readonly [string, string]> = [];
      const watch = await (await kv).watch();
      void (async () => {
        for await (const entry of watch)
          if (entry.operation === "PUT") written.push([entry.key, decodeRecord(entry.string()).status]);
      })();
      return {
        name: "nats",
        written,
        async parts(clock, holder) {
          const core = await createRuntimeCore({ servers: server.url, logger: silentLogger(), clock });
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
        async runtime({ inspect, clock, ...jobs } = {}) {
          const rt = await createRuntime({
            servers: server.url,
            logger: silentLogger(),
            ...(clock ? { clock } : {}),
            jobs: { leaseMs: 30_000, cleanupIntervalMs: 0, ...jobs },
            ...(inspect ? { inspect } : {}),
          });
          runtimes.push(rt);
          return rt;
        },
        async record(id) {
          const entry = await (await kv).get(id);
          return entry?.operation === "PUT" ? decodeRecord(entry.string()) : undefined;
        },
        async stop() {
          for (const rt of runtimes.reverse()) await rt.stop();
          watch.stop();
          await nc.close();
          await server.dispose();
        },
      };
    },
  },
];

const token = "t".repeat(40);

describe.each(backends)("jobs from several runtimes on $name", ({ start }) => {
  let b: Backend & { stop(): Promise<void> };
  let queues = 0;
  beforeAll(async () => {
    b = await start();
  });
  /** Gates a failed test left shut: its workers must be able to stop. */
  const gates: Array<() => void> = [];
  afterAll(async () => {
    for (const open of gates) open();
    await b?.stop();
  });

  /**
   * Runtime A submits `total` tasks and a worker on A answers `first` of them,
   * then waits at a gate; resolves once the record holds those answers.
   */
  const halfDone = async (total: number, first: number, extra: Record<string, unknown> = {}) => {
    const a = await b.runtime();
    const queue = `q${++queues}`;
    const handled: number[] = [];
    const wait = gate();
    gates.push(wait.open);
    const worker = a.workers.start<number, number>({
      queue,
      concurrency: 1,
      handler: async (task) => {
        if (handled.length >= first) await wait.opened;
        handled.push(task.index);
        return task.index;
      },
    });
    const job = await a.jobs.submit<number, number>({
      queue,
      tasks: Array.from({ length: total }, (_, i) => i),
      ...extra,
    });
    await waitUntil(async () => ((await b.record(job.id))?.counts.done ?? 0) >= first, {
      timeoutMs,
      message: `record of ${job.id} holds ${first} answers`,
    });
    return { a, queue, job, handled, open: wait.open, worker };
  };

  it("an idempotent resubmit from another runtime shows the job as recorded, running and finished", async () => {
    const key = `key-${b.name}-${++queues}`;
    const { job, open, worker } = await halfDone(20, 8, { idempotencyKey: key });
    const other = await b.runtime();
    // The same request (same tasks: another one with the key is an IdempotencyConflict).
    const tasks = Array.from({ length: 20 }, (_, i) => i);
    const running = await other.jobs.submit({ queue: job.queue, tasks, idempotencyKey: key });
    const recorded = (await b.record(job.id))!;
    expect(running.id).toBe(job.id);
    expect(running.snapshot()).toMatchObject({ status: "running", total: 20 });
    expect(running.snapshot().done).toBeGreaterThanOrEqual(recorded.counts.done);
    open();
    const final = await running.done();
    expect(final).toMatchObject({ status: "succeeded", done: 20, failed: 0, dead: 0 });
    expect(await b.record(job.id)).toMatchObject({ status: "succeeded", counts: { done: 20 } });
    // Once it is over, a third runtime's resubmit gets the finished job at once.
    const third = await b.runtime();
    const finished = await third.jobs.submit({ queue: job.queue, tasks, idempotencyKey: key });
    expect(finished.snapshot()).toMatchObject({ status: "succeeded", done: 20 });
    expect(await finished.done()).toMatchObject({ status: "succeeded", done: 20 });
    await worker.stop();
  });

  it("get from another runtime shows at least the record's counts at once", async () => {
    const { job, open, worker } = await halfDone(40, 8);
    const recorded = (await b.record(job.id))!;
    const other = await b.runtime({ takeOver: false });
    const seen = await other.jobs.get(job.id);
    expect(seen?.snapshot().done).toBeGreaterThanOrEqual(recorded.counts.done);
    expect(recorded.counts.done).toBeGreaterThanOrEqual(8);
    open();
    expect(await seen!.done()).toMatchObject({ status: "succeeded", done: 40 });
    await worker.stop();
  });

  it("a finished job opened from another runtime later says when it ended, not when it was opened", async () => {
    const { job, open, worker } = await halfDone(3, 0);
    open();
    const end = await job.done();
    const recorded = (await b.record(job.id))!;
    // The point: opened well after its end (an opening's time would show as a second later).
    await delay(1000);
    const later = await (await b.runtime({ takeOver: false })).jobs.get(job.id);
    expect(later!.snapshot()).toMatchObject({ status: "succeeded", done: 3 });
    // The record's end, by the writer's clock: its last answer's time, give or take the write.
    expect(later!.snapshot().lastProgressAt).toBe(recorded.finishedAt);
    // (Its write follows the last answer by a few ms; room for a machine busy with other files.)
    expect(Math.abs(later!.snapshot().lastProgressAt - end.lastProgressAt)).toBeLessThan(800);
    await worker.stop();
  });

  it("cancel from a watching runtime (takeOver off) ends the job everywhere and keeps its counts", async () => {
    const { job, handled, open, worker } = await halfDone(40, 8);
    const other = await b.runtime({ takeOver: false });
    const seen = await other.jobs.get(job.id);
    // Right after `get`: this runtime may not have replayed a single answer yet.
    const before = (await b.record(job.id))!;
    const askedAt = Date.now();
    const cancelled = await seen!.cancel("enough");
    expect(cancelled).toMatchObject({ status: "failed", reason: "cancelled: enough" });
    const after = (await b.record(job.id))!;
    expect(after).toMatchObject({ status: "failed", reason: "cancelled: enough" });
    expect(after.counts.done).toBeGreaterThanOrEqual(before.counts.done);
    // The supervisor learns of it from the record, not by waiting out its 30 s lease (a third
    // of it is a bound no machine load reaches; the bug took the whole lease, or forever).
    expect(await job.done()).toMatchObject({ status: "failed", reason: "cancelled: enough" });
    expect(Date.now() - askedAt).toBeLessThan(10_000);
    const startedBefore = handled.length;
    open();
    await worker.stop();
    // The one task held at the gate may finish; nothing more is handed out.
    expect(handled.length).toBeLessThanOrEqual(startedBefore + 1);
    expect((await b.record(job.id))!.status).toBe("failed");
  });

  it("cancel from a runtime whose clock is behind the supervisor's still ends the job everywhere", async () => {
    const { job, open, worker } = await halfDone(40, 8);
    // Five seconds slow: its cancel, stamped by its own clock, is older than the supervisor's writes.
    const slow: Clock = {
      now: () => Date.now() - 5000,
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
    };
    const other = await b.runtime({ takeOver: false, clock: slow });
    const seen = await other.jobs.get(job.id);
    const bounded = <T>(promise: Promise<T>) =>
      Promise.race([
        promise,
        new Promise<string>((resolve) => setTimeout(() => resolve("no answer in 10 s"), 10_000)),
      ]);
    expect(await bounded(seen!.cancel("enough"))).toMatchObject({
      status: "failed",
      reason: "cancelled: enough",
    });
    expect(await bounded(job.done())).toMatchObject({ status: "failed", reason: "cancelled: enough" });
    expect((await b.record(job.id))!).toMatchObject({ status: "failed", reason: "cancelled: enough" });
    open();
    await worker.stop();
  });

  it("a progress write planned while the job was queuing never moves it back once committed", async () => {
    // Time moves only here: the progress timer armed while queuing fires in the window between
    // the commit of the record and the job actor hearing of it.
    const clock = new ManualClock(Date.now());
    const { core, broker, stop } = await b.parts(clock, `slow-${b.name}`);
    const jobs = new JobRegistry(core, broker, {
      reapIntervalMs: 3600_000,
      reapGraceMs: 10_000,
      leaseMs: 30_000,
      takeOver: false,
      submitHooks: {
        afterStep: async (step) => {
          if (step !== SubmitStep.recordCommitted) return;
          for (let i = 0; i < 8; i++) {
            clock.advance(250);
            await new Promise((resolve) => setTimeout(resolve, 5));
          }
        },
      },
    });
    const statuses = (id: string) => b.written.filter(([key]) => key === id).map(([, status]) => status);
    try {
      const queue = `q${++queues}`;
      const ids: string[] = [];
      for (let n = 0; n < 5; n++) {
        const job = await jobs.submit({ queue, tasks: [n, n + 1] });
        ids.push(job.id);
        // Whatever the actor writes after the commit lands by now (the clock moves on too).
        clock.advance(1000);
        await waitUntil(async () => (await b.record(job.id))?.phase === "committed", {
          timeoutMs,
          message: `job ${job.id} committed`,
        });
      }
      const rank: Record<string, number> = { queuing: 0, running: 1, stalled: 1, succeeded: 2, failed: 2 };
      for (const id of ids) {
        const seen = statuses(id);
        expect(seen).toContain("running");
        const backwards = seen.filter((s, i) => i > 0 && rank[s]! < rank[seen[i - 1]!]!);
        expect({ id, seen, backwards }).toEqual({ id, seen, backwards: [] });
        expect((await b.record(id))?.status).toBe("running");
      }
    } finally {
      await jobs.stop();
      await stop();
    }
  });

  it("a supervisor whose lease renewals fail stops writing; another runtime takes over, one writer at a time", async () => {
    const clock = new ManualClock(Date.now());
    const leaseMs = 1000;
    /** Who wrote the job record, when (on the shared clock): the write ledger. */
    const writes: Array<{ holder: string; at: number; status: string }> = [];
    const ledgered = (broker: Broker, holder: string, failRenew?: () => boolean): Broker =>
      new Proxy(broker, {
        get(target, key) {
          if (key === "updateRecord")
            return (record: JobRecord, revision: number) =>
              target.updateRecord(record, revision).then((next) => {
                writes.push({ holder, at: clock.now(), status: record.status });
                return next;
              });
          if (key === "leases" && failRenew)
            return new Proxy(target.leases, {
              get(leases, name) {
                // The lease store is out of reach for this runtime: a re-acquire fails like a renewal.
                if ((name === "renew" || name === "acquire" || name === "heartbeat") && failRenew())
                  return () =>
                    Promise.reject(
                      new PermanentBrokerError({ operation: "lease.renew", message: "cut off" }),
                    );
                const value = Reflect.get(leases, name, leases);
                return typeof value === "function" ? value.bind(leases) : value;
              },
            });
          const value = Reflect.get(target, key, target);
          return typeof value === "function" ? value.bind(target) : value;
        },
      });
    let cutOff = false;
    const a = await b.parts(clock, `a-${b.name}`);
    const c = await b.parts(clock, `b-${b.name}`);
    const options = { reapIntervalMs: 3600_000, reapGraceMs: 10_000, leaseMs, takeOver: true };
    const first = new JobRegistry(
      a.core,
      ledgered(a.broker, "a", () => cutOff),
      options,
    );
    const second = new JobRegistry(c.core, ledgered(c.broker, "b"), options);
    const queue = `q${++queues}`;
    const step = async (ms: number) => {
      clock.advance(ms);
      await new Promise((resolve) => setTimeout(resolve, 10));
    };
    try {
      const job = await first.submit({ queue, tasks: [0, 1, 2], stallAfterMs: 60_000 });
      cutOff = true;
      // Renewals now fail: `a` holds the lease only until the expiry it last wrote.
      let tookOverAt: number | undefined;
      for (let i = 0; i < 200 && tookOverAt === undefined; i++) {
        await step(100);
        const lease = (await c.broker.leases.list()).find((l) => l.jobId === job.id)?.lease;
        if (lease?.holder === `b-${b.name}`) tookOverAt = clock.now();
      }
      expect(tookOverAt).toBeDefined();
      expect(a.broker.leases.holds(job.id, clock.now())).toBe(false);
      // `a` reaches the lease store again: its heartbeat is written anew, and must not make
      // it the job's supervisor again (B took the lease in the gap).
      cutOff = false;
      for (let i = 0; i < 10; i++) await step(leaseMs / 3);
      expect(a.broker.leases.holds(job.id, clock.now())).toBe(false);
      expect((await c.broker.leases.list()).find((l) => l.jobId === job.id)?.lease.holder).toBe(
        `b-${b.name}`,
      );
      // Workers answer; the job ends with one supervisor writing.
      const rt = await b.runtime({ takeOver: false });
      const worker = rt.workers.start<number, number>({ queue, handler: (t) => t.index });
      for (let i = 0; i < 300 && (await b.record(job.id))?.status !== "succeeded"; i++) await step(100);
      await worker.stop();
      expect((await b.record(job.id))?.status).toBe("succeeded");
      const late = writes.filter((w) => w.holder === "a" && w.at >= tookOverAt!);
      expect(late).toEqual([]);
      expect(writes.filter((w) => w.status === "succeeded").map((w) => w.holder)).toEqual(["b"]);
    } finally {
      cutOff = false;
      await first.stop();
      await second.stop();
      await a.stop();
      await c.stop();
    }
  });

  it("GET /jobs/:id answers from the record and leaves no job actor in the API's runtime", async () => {
    const { job, open, worker } = await halfDone(40, 8);
    /** Every actor the API's runtime starts, by id (its inspection events). */
    const actors = new Set<string>();
    const apiRuntime = await b.runtime({
      takeOver: false,
      inspect: {
        inspect: (e: InspectionEvent) => {
          const { id } = e.actorRef as { id?: string };
          if (id) actors.add(id);
        },
      },
    });
    const api = createHttpApi(apiRuntime, {
      tokens: { [token]: { identity: "tester", role: "read", queues: "*" } },
    });
    const recorded = (await b.record(job.id))!;
    const answer = await api.fetch(
      new Request(`http://api/jobs/${job.id}`, { headers: { authorization: `Bearer ${token}` } }),
    );
    expect(answer.status).toBe(200);
    const body = (await answer.json()) as { status: string; done: number };
    expect(body.status).toBe("running");
    expect(body.done).toBeGreaterThanOrEqual(recorded.counts.done);
    expect([...actors].filter((id) => id.startsWith("job:"))).toEqual([]);
    // The witness can see a job actor: a `get` on the same runtime does start one.
    await apiRuntime.jobs.get(job.id);
    expect([...actors].filter((id) => id.startsWith("job:"))).toEqual([`job:${job.id}`]);
    open();
    await job.done();
    await worker.stop();
  });

  it("many small jobs at once: no record ever moves backwards (read raw)", async () => {
    const rt = await b.runtime();
    const queue = `q${++queues}`;
    const worker = rt.workers.start<number, number>({ queue, concurrency: 64, handler: (t) => t.index });
    try {
      const handles = await Promise.all(
        Array.from({ length: 300 }, (_, n) => rt.jobs.submit({ queue, tasks: [n, n + 1] })),
      );
      const finals = await Promise.all(handles.map((h) => h.done()));
      expect(finals.every((f) => f.status === "succeeded")).toBe(true);
      const rank: Record<string, number> = { queuing: 0, running: 1, stalled: 1, succeeded: 2, failed: 2 };
      const ids = new Set(handles.map((h) => h.id));
      const last = new Map<string, string>();
      const backwards: string[] = [];
      for (const [id, status] of b.written) {
        if (!ids.has(id)) continue;
        const before = last.get(id);
        if (before !== undefined && rank[status]! < rank[before]!)
          backwards.push(`${id}: ${before} → ${status}`);
        last.set(id, status);
      }
      expect(backwards).toEqual([]);
    } finally {
      await worker.stop();
    }
  });

  it("a submit that loses its key to another request never touches the winner's job", async () => {
    const key = `race-${++queues}`;
    const queue = `q${queues}`;
    const a = await b.runtime();
    const winner = await a.jobs.submit<number, number>({ queue, tasks: [1, 2, 3], idempotencyKey: key });
    // The winner's runtime stops watching (its lease is free): the job goes on, unsupervised.
    await a.stop();
    // The loser read no record before its submit started (the race), then claims the key.
    const c = await b.runtime();
    // Its lease ran out (as after a crash): whoever acquires it next may supervise.
    await partsOf(c).broker.leases.remove(winner.id);
    const racing = await createTestRuntime({ broker: blindOnce(partsOf(c).broker, winner.id) });
    try {
      const error = await racing.jobs.submit({ queue, tasks: [7], idempotencyKey: key }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toMatchObject({ _tag: "IdempotencyConflict" });
      // The loser's actor ends without writing: the winner's record stays its own.
      await waitUntil(async () => partsOf(racing).jobs.watchedSnapshot(winner.id) === undefined, {
        timeoutMs,
        message: "the loser's job actor to stop",
      });
      expect(await b.record(winner.id)).toMatchObject({ status: "running", phase: "committed" });
      const worker = c.workers.start<number, number>({ queue, handler: (t) => t.payload });
      const final = await (await c.jobs.get(winner.id))!.done();
      expect(final).toMatchObject({ status: "succeeded", done: 3, failed: 0, dead: 0 });
      await worker.stop();
    } finally {
      await racing.stop();
    }
  });

  it("a submit that fails rejects with the broker's typed error", async () => {
    const base = await b.runtime();
    const refusing = await createTestRuntime({ broker: refusingTasks(partsOf(base).broker) });
    try {
      const error = await refusing.jobs.submit({ queue: `q${++queues}`, tasks: [1] }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(PermanentBrokerError);
      expect(error).toMatchObject({ _tag: "PermanentBrokerError", message: "publish refused" });
    } finally {
      await refusing.stop();
    }
  });
});

/** A broker that takes everything but a submit's tasks. */
const refusingTasks = (broker: Broker): Broker =>
  new Proxy(broker, {
    get(target, key) {
      if (key === "publishTasks")
        return () =>
          Promise.reject(
            new PermanentBrokerError({ operation: "job.tasks.publish", message: "publish refused" }),
          );
      if (key === "close") return async () => undefined; // the runtime it came from closes it
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });

/** A broker whose first read of one record finds nothing: the record appears just after it. */
const blindOnce = (broker: Broker, id: string): Broker => {
  let blind = true;
  return new Proxy(broker, {
    get(target, key) {
      if (key === "getRecord")
        return (wanted: string) => {
          if (blind && wanted === id) {
            blind = false;
            return Promise.resolve(undefined);
          }
          return target.getRecord(wanted);
        };
      if (key === "close") return async () => undefined; // the runtime it came from closes it
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
};
