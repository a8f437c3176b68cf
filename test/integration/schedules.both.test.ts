/**
 * Recurring jobs (issue #19 item 2) on the memory broker (runtimes sharing
 * one memory server) and on NATS (runtimes on one nats-server). The oracles
 * are independent of the scheduler: the job records read raw (a nats.js KV
 * client on the jobs bucket; the memory server's bucket) and the handlers'
 * ledger of the jobs they ran. Each tick must be one job, handled once, and
 * the ticks consecutive.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { JobRegistry } from "../../src/api/jobs.ts";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { nextTick } from "../../src/api/schedule-rule.ts";
import { SimulatedCrash, SubmitStep } from "../../src/effects/submit-job.ts";
import type { RuntimeOptions } from "../../src/index.ts";
import { InvalidArgument } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { defineQueue } from "../../src/kernel/queue.ts";
import { scheduleOfKey, tickKey } from "../../src/kernel/schedule-record.ts";
import { createMemoryBroker, createMemoryServer, type MemoryServer } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { type RawRecord, rawJobRecords } from "../harness/raw-job-records.ts";
import { waitUntil } from "../harness/wait.ts";

interface Backend {
  readonly name: string;
  runtime(name: string, options?: RuntimeOptions): Promise<Runtime>;
  /** A registry that dies after `step` of every submit (no clean-up), on its own connection. */
  crashing(step: SubmitStep): Promise<{ registry: JobRegistry; stop(): Promise<void> }>;
  /** Every job record stored, read without jetstate's code. */
  records(): Promise<RawRecord[]>;
  stop(): Promise<void>;
}

const crashAfter = (step: SubmitStep) => ({
  reapIntervalMs: 3600_000,
  reapGraceMs: 10_000,
  leaseMs: 300,
  takeOver: false,
  submitHooks: {
    afterStep: (at: SubmitStep) => {
      if (at === step) throw new SimulatedCrash(`process died after ${at}`);
    },
  },
});

const memoryBackend = (): Backend => {
  const server: MemoryServer = createMemoryServer();
  const runtimes: Runtime[] = [];
  return {
    name: "memory",
    async runtime(name, options = {}) {
      const rt = await createRuntime({
        name,
        logger: silentLogger(),
        ...options,
        jobs: { cleanupIntervalMs: 0, reapIntervalMs: 0, ...options.jobs },
        broker: createMemoryBroker({ server }),
      });
      runtimes.push(rt);
      return rt;
    },
    async crashing(step) {
      const core = await createRuntimeCore({ logger: silentLogger() }, { connect: false });
      const broker: Broker = createMemoryBroker({ server });
      const registry = new JobRegistry(core, broker, crashAfter(step));
      const stop = async () => {
        await registry.stop();
        await core.stop();
      };
      return { registry, stop };
    },
    async records() {
      return memoryServerState(server)
        .records.live()
        .map((e) => JSON.parse(e.value as string) as RawRecord);
    },
    async stop() {
      for (const rt of runtimes.splice(0)) await rt.stop();
      server.close();
    },
  };
};

let backendsMade = 0;

const natsBackend = (server: NatsServerHandle, nc: NatsConnection): Backend => {
  const runtimes: Runtime[] = [];
  // A prefix of its own per test: runtimes a failed test left running fire nothing of the next one's.
  const prefix = `sched${++backendsMade}`;
  return {
    name: "nats",
    async runtime(name, options = {}) {
      const rt = await createRuntime({
        servers: server.url,
        prefix,
        name,
        logger: silentLogger(),
        ...options,
        jobs: { cleanupIntervalMs: 0, reapIntervalMs: 0, ...options.jobs },
      });
      runtimes.push(rt);
      return rt;
    },
    async crashing(step) {
      const core = await createRuntimeCore({ servers: server.url, prefix, logger: silentLogger() });
      const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "crashing" });
      const registry = new JobRegistry(core, broker, crashAfter(step));
      const stop = async () => {
        await registry.stop();
        await core.stop();
      };
      return { registry, stop };
    },
    records: () => rawJobRecords(nc, `${prefix}_jobs`),
    async stop() {
      for (const rt of runtimes.splice(0)) await rt.stop();
    },
  };
};

let nats: NatsServerHandle;
let nc: NatsConnection;
beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});
afterAll(async () => {
  await nc?.close();
  await nats?.dispose();
});

const backends: Array<{ name: string; make(): Backend }> = [
  { name: "memory", make: memoryBackend },
  { name: "nats", make: () => natsBackend(nats, nc) },
];

/** The ticks of the committed jobs of `queue`, oldest first; throws for a job of the queue that no tick names. */
const ticksOf = (records: readonly RawRecord[], queue: string): number[] =>
  records
    .filter((r) => r.queue === queue && r.phase === "committed")
    .map((r) => {
      const from = scheduleOfKey(r.idempotencyKey);
      if (!from) throw new Error(`job ${r.id} of ${queue} has no tick key: ${r.idempotencyKey}`);
      return from.tick;
    })
    .sort((a, b) => a - b);

describe.each(backends)("schedules on $name", ({ make }) => {
  it("an everyMs: 300 schedule fired by two runtimes: each tick one job, handled once, none missed", async () => {
    const backend = make();
    try {
      const queue = "every300";
      const handled: string[] = [];
      const a = await backend.runtime("sched-a");
      const b = await backend.runtime("sched-b");
      for (const rt of [a, b])
        rt.workers.start<unknown, null>({
          queue,
          concurrency: 4,
          handler: (task) => {
            handled.push(task.jobId);
            return null;
          },
        });
      const upserted = await a.schedules.upsert({ id: "every300", everyMs: 300, job: { queue, tasks: [1] } });
      expect(await b.schedules.get("every300")).toMatchObject({ id: "every300", rule: { everyMs: 300 } });
      // A window of at least ten ticks: ten of them committed as jobs (whichever runtime fired them).
      await waitUntil(async () => ticksOf(await backend.records(), queue).length >= 10, {
        timeoutMs: 20_000,
        intervalMs: 100,
        message: "ten ticks committed",
      });
      const end = Date.now();
      // Every tick in (upsert, end] is due: wait for each to be a committed job.
      const expected: number[] = [];
      for (let t = nextTick({ everyMs: 300 }, upserted.since); t! <= end; t = nextTick({ everyMs: 300 }, t!))
        expected.push(t!);
      await waitUntil(
        async () => {
          const ticks = ticksOf(await backend.records(), queue);
          return expected.every((t) => ticks.includes(t));
        },
        { timeoutMs: 10_000, message: "every tick of the window committed" },
      );
      expect(await a.schedules.remove("every300")).toBe(true);
      const removedAt = Date.now();
      expect(await b.schedules.get("every300")).toBeUndefined();
      // Nothing in flight: every job is handled.
      await waitUntil(async () => handled.length >= ticksOf(await backend.records(), queue).length, {
        timeoutMs: 10_000,
        message: "every job handled",
      });
      const ticks = ticksOf(await backend.records(), queue);
      expect(expected.length).toBeGreaterThanOrEqual(8);
      // Each tick of the window once, none twice, consecutive (no gap) up to the remove.
      expect(ticks.slice(0, expected.length)).toEqual(expected);
      expect(new Set(ticks).size).toBe(ticks.length);
      for (let n = 1; n < ticks.length; n++) expect(ticks[n]! - ticks[n - 1]!).toBe(300);
      // The handlers ran each job once, and only those jobs.
      const jobIds = (await backend.records())
        .filter((r) => r.queue === queue && r.phase === "committed")
        .map((r) => r.id)
        .sort();
      expect([...handled].sort()).toEqual(jobIds);
      // Removed: no runtime fires a tick after its next pass (at most one pass in flight).
      await waitUntil(() => Date.now() > removedAt + 1500, { timeoutMs: 5000, message: "five periods" });
      const after = ticksOf(await backend.records(), queue).filter((t) => t > removedAt + 300);
      expect(after).toEqual([]);
    } finally {
      await backend.stop();
    }
  }, 30_000);

  it("a tick whose first submitter died mid-submit fires once: the reaper rolls it back, another runtime submits afresh", async () => {
    const backend = make();
    try {
      const queue = "crashtick";
      const handled: string[] = [];
      // On the lane: its submit's publish is its commit, so the rollback's write, seen late by
      // the submit that took the key over, found the job running and ended it failed ("rolled
      // back by the reaper") while its task ran; the record then said submitting for good.
      const rt = await backend.runtime("survivor", { jobs: { lane: true } });
      rt.workers.start<unknown, null>({
        queue,
        handler: (task) => {
          handled.push(task.jobId);
          return null;
        },
      });
      const job = { queue, tasks: ["x"] };
      const upserted = await rt.schedules.upsert({ id: "crash", everyMs: 2000, job });
      // A tick far enough ahead for the dead submit to claim it first: one due within a few
      // milliseconds is the survivor's to fire (its job is another tick's, left out below).
      let tick = nextTick({ everyMs: 2000 }, Math.max(upserted.since, Date.now()))!;
      if (tick - Date.now() < 500) tick = nextTick({ everyMs: 2000 }, tick)!;
      const ofTick = (r: { idempotencyKey?: string }) => scheduleOfKey(r.idempotencyKey)?.tick === tick;
      // The runtime that fired this tick first died after writing the record, before its commit.
      const dead = await backend.crashing(SubmitStep.recordCreated);
      await expect(dead.registry.submit({ ...job, idempotencyKey: tickKey("crash", tick) })).rejects.toThrow(
        /process died/,
      );
      await dead.stop();
      const [claimed] = (await backend.records()).filter((r) => r.queue === queue && ofTick(r));
      expect(claimed).toMatchObject({ phase: "submitting" });
      // The survivor fires the tick and waits on the dead submit; once it is due, the reaper rolls it back.
      await waitUntil(() => Date.now() > tick + 300, { timeoutMs: 5000, message: "tick passed" });
      // The reaper's clock just past the dead submit's deadline and the default grace (10 s), not
      // far beyond: a submit of the tick that took the record over meanwhile is not due yet. A
      // second more: on NATS the deadline counts from the server's stamp of the record's write,
      // a round trip after the submitter's (a millisecond more was short of it on a loaded run).
      await partsOf(rt).jobs.reap(() => Math.max(Date.now(), claimed!.commitDeadline + 10_000 + 1_000));
      await waitUntil(async () => handled.includes(claimed!.id), {
        timeoutMs: 10_000,
        message: "the tick's job handled",
      });
      // A lane job (the default for one task) writes its commit with its end, just after its
      // handler returned.
      await waitUntil(
        async () => (await backend.records()).some((r) => ofTick(r) && r.phase === "committed"),
        { timeoutMs: 10_000, message: "the tick's job committed in its record" },
      );
      const records = (await backend.records()).filter((r) => r.queue === queue);
      const mine = records.filter(ofTick);
      expect(mine).toHaveLength(1);
      expect(mine[0]).toMatchObject({ phase: "committed", id: claimed!.id });
      // Taken over by another submit, not the dead one's.
      expect(mine[0]!.submitId).not.toBe(claimed!.submitId);
      // Handled once (a tick before it, fired by the survivor alone, is another job).
      expect(handled.filter((id) => id === claimed!.id)).toEqual([claimed!.id]);
      await rt.schedules.remove("crash");
    } finally {
      await backend.stop();
    }
  }, 30_000);

  it("an upsert with a new rule takes effect at its next tick, in every runtime", async () => {
    const backend = make();
    try {
      const queue = "ruled";
      const a = await backend.runtime("rule-a");
      await backend.runtime("rule-b");
      a.workers.start({ queue, handler: () => null });
      await a.schedules.upsert({ id: "ruled", everyMs: 1000, job: { queue, tasks: [1] } });
      await waitUntil(async () => ticksOf(await backend.records(), queue).length >= 1, {
        timeoutMs: 5000,
        message: "a tick of the first rule",
      });
      const changed = await a.schedules.upsert({ id: "ruled", everyMs: 700, job: { queue, tasks: [1] } });
      const firstNew = nextTick({ everyMs: 700 }, changed.since)!;
      expect(changed.nextTick).toBe(firstNew);
      await waitUntil(async () => ticksOf(await backend.records(), queue).includes(firstNew + 700), {
        timeoutMs: 5000,
        message: "two ticks of the new rule",
      });
      await a.schedules.remove("ruled");
      const ticks = ticksOf(await backend.records(), queue);
      // Before the change: the old rule's; after it: the new rule's only, from its first tick on.
      expect(ticks.filter((t) => t <= changed.since).every((t) => t % 1000 === 0)).toBe(true);
      const later = ticks.filter((t) => t > changed.since);
      expect(later.slice(0, 2)).toEqual([firstNew, firstNew + 700]);
      expect(later.every((t) => t % 700 === 0)).toBe(true);
      expect(new Set(ticks).size).toBe(ticks.length);
    } finally {
      await backend.stop();
    }
  }, 30_000);

  it.each([
    ["skip", 0],
    ["runOnce", 1],
  ] as const)(
    "missed ticks while no runtime ran, missed: %s → %i job(s) for them",
    async (missed, count) => {
      const backend = make();
      try {
        const queue = `missed_${missed}`;
        // A runtime that manages schedules but fires nothing (as the CLI): no scheduler ran.
        const admin = await backend.runtime("manager", { jobs: { scheduler: false } });
        const everyMs = 1000;
        const upserted = await admin.schedules.upsert({
          id: queue,
          everyMs,
          missed,
          job: { queue, tasks: [1] },
        });
        // Three ticks fall with no scheduler running.
        const third = upserted.since + 3 * everyMs + 50;
        await waitUntil(() => Date.now() > third, { timeoutMs: 8000, message: "three ticks passed" });
        expect((await backend.records()).filter((r) => r.queue === queue)).toEqual([]);
        // The late runtime starts just after a tick: its start (a second or less on a loaded
        // machine) ends before the next one, so the missed ticks it decides are those before
        // `started`. Started 400 ms apart, a slow start crossed a tick and the latest missed one
        // was later than the test's (seen once in three runs on a loaded machine).
        await waitUntil(() => Date.now() % everyMs >= 20 && Date.now() % everyMs < 120, {
          timeoutMs: 3000,
          intervalMs: 5,
          message: "just after a tick",
        });
        const started = Date.now();
        const rt = await backend.runtime("late");
        // The next tick after the start fires as usual: then the missed ones are decided.
        const next = nextTick({ everyMs }, Date.now())!;
        await waitUntil(async () => ticksOf(await backend.records(), queue).includes(next), {
          timeoutMs: 5000,
          message: "the first tick after the start fired",
        });
        const ticks = ticksOf(await backend.records(), queue);
        const before = ticks.filter((t) => t <= started);
        expect(before).toHaveLength(count);
        // runOnce: the latest missed tick, not an older one.
        if (count === 1) expect(before[0]).toBe(Math.floor(started / everyMs) * everyMs);
        await rt.schedules.remove(queue);
      } finally {
        await backend.stop();
      }
    },
    30_000,
  );

  it("a tick's job runs on what the queue's schema made of each task, as a direct submit does", async () => {
    const backend = make();
    try {
      const rt = await backend.runtime("typed");
      // The schema converts and fills in a default: the handler must see both, from a tick too.
      const typed = defineQueue<{ n: number; unit: string }>("typedsched", {
        schema: {
          task: (value) => {
            const v = value as { n: string | number; unit?: string };
            return { n: Number(v.n), unit: v.unit ?? "ms" };
          },
        },
      });
      const seen = new Map<string, unknown>();
      const worker = rt.workers.start<unknown, null>({
        queue: "typedsched",
        handler: (task) => {
          seen.set(task.jobId, task.payload);
          return null;
        },
      });
      const direct = await rt.jobs.submit({ queue: typed, tasks: [{ n: "5" } as never] });
      await direct.done();
      await rt.schedules.upsert({ id: "typed", everyMs: 300, job: { queue: typed, tasks: [{ n: "5" }] } });
      await waitUntil(() => seen.size > 1, {
        timeoutMs: 10_000,
        message: "a tick's job handled",
      });
      await rt.schedules.remove("typed");
      await worker.stop();
      expect(seen.get(direct.id)).toEqual({ n: 5, unit: "ms" });
      for (const [jobId, payload] of seen) expect(payload, jobId).toEqual({ n: 5, unit: "ms" });
    } finally {
      await backend.stop();
    }
  });

  it("a schedule as large as an upsert takes still has its ticks recorded", async () => {
    const backend = make();
    try {
      const rt = await backend.runtime("large");
      // The largest schedule an upsert stores (two tasks; one must fit a message with room for
      // its dead letter): every tick then writes its lastTick into that record.
      const request = (size: number) => ({
        id: "large",
        everyMs: 300,
        job: { queue: "largesched", tasks: ["a".repeat(size >> 1), "b".repeat(size - (size >> 1))] },
      });
      let fits = 1_000_000;
      let over = 1_100_000;
      while (over - fits > 1) {
        const size = (fits + over) >> 1;
        const stored = await rt.schedules.upsert(request(size)).then(
          () => true,
          () => false,
        );
        if (stored) fits = size;
        else over = size;
        if (stored) await rt.schedules.remove("large");
      }
      await rt.schedules.upsert(request(fits));
      const worker = rt.workers.start<unknown, null>({ queue: "largesched", handler: () => null });
      await waitUntil(async () => (await rt.schedules.get("large"))?.lastTick !== undefined, {
        timeoutMs: 5000,
        message: "a tick recorded in the largest schedule stored",
      });
      await rt.schedules.remove("large");
      await worker.stop();
    } finally {
      await backend.stop();
    }
  }, 60_000);

  it("a bad schedule is refused naming the field, and nothing is stored", async () => {
    const backend = make();
    try {
      const rt = await backend.runtime("checker", { jobs: { scheduler: false } });
      const job = { queue: "q", tasks: [1] };
      const cases: Array<[unknown, string]> = [
        [{ id: "a", cron: "not a cron", job }, "cron"],
        // A date (croner's one-shot) and a seventh field (a year) are no cron of 5 or 6 fields.
        [{ id: "a", cron: "2030-01-01T00:00:00", job }, "cron"],
        [{ id: "a", cron: "0 0 0 1 1 * 2999", job }, "cron"],
        [{ id: "a", cron: "* * * * *", timezone: "Mars/Olympus", job }, "timezone"],
        [{ id: "a", everyMs: 10, job }, "everyMs"],
        [{ id: "a", everyMs: 1000, cron: "* * * * *", job }, "cron"],
        [{ id: "a", job }, "cron"],
        [{ id: "a b", everyMs: 1000, job }, "id"],
        [{ id: "a", everyMs: 1000, missed: "sometimes", job }, "missed"],
        [{ id: "a", everyMs: 1000, job: { queue: "q", tasks: [] } }, "job.tasks"],
        [{ id: "a", everyMs: 1000, job: { queue: "q.x", tasks: [1] } }, "job.queue"],
        [{ id: "a", everyMs: 1000, job: { queue: "q", tasks: [1], maxDeliver: 0 } }, "job.maxDeliver"],
        [{ id: "a", everyMs: 1000, job: { ...job, idempotencyKey: "k" } }, "job.idempotencyKey"],
        // A time of its own: a tick's job runs at its tick (a Date stored would come back a string).
        [{ id: "a", everyMs: 1000, job: { ...job, runAt: new Date(Date.now() + 1000) } }, "job.runAt"],
        [{ id: "a", everyMs: 1000, job: { ...job, taskRunAt: [Date.now() + 1000] } }, "job.taskRunAt"],
        // Each task fits a message; the schedule's record, every task in it, does not.
        [
          {
            id: "a",
            everyMs: 1000,
            job: { queue: "q", tasks: ["x".repeat(400_000), "y", "z"].map((t) => t.padEnd(400_000)) },
          },
          "job.tasks",
        ],
      ];
      for (const [request, field] of cases) {
        const error = await rt.schedules.upsert(request as never).catch((e: unknown) => e);
        expect(error, JSON.stringify(request).slice(0, 200)).toBeInstanceOf(InvalidArgument);
        expect((error as InvalidArgument).field, JSON.stringify(request).slice(0, 200)).toBe(field);
      }
      expect(await rt.schedules.list()).toEqual([]);
      // A time zone is stored as its IANA name, however it was spelt.
      const stored = await rt.schedules.upsert({ id: "zoned", cron: "0 3 * * *", timezone: "utc", job });
      expect(stored.rule).toEqual({ cron: "0 3 * * *", timezone: "UTC" });
      await rt.schedules.remove("zoned");
    } finally {
      await backend.stop();
    }
  });
});
