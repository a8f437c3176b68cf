/**
 * A runtime whose clock is far ahead of the others' (ten minutes) among
 * runtimes with correct clocks, all firing one `everyMs: 300` schedule, on
 * the memory broker (one memory server on the real clock) and on NATS (one
 * nats-server). The oracle is the job records read raw (a nats.js KV client
 * on the jobs bucket; the memory server's bucket): each committed job's tick,
 * read from its idempotency key, against the ticks real time gave. No job may
 * carry a tick later than the real time it was read at (fired early), and
 * every real tick of the window must be a job (none skipped), whichever
 * runtime stored the schedule (its `since`) or recorded its `lastTick`.
 */
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { nextTick } from "../../src/api/schedule-rule.ts";
import type { RuntimeOptions } from "../../src/index.ts";
import { type Clock, realClock } from "../../src/kernel/clock.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { scheduleOfKey } from "../../src/kernel/schedule-record.ts";
import { createMemoryBroker, createMemoryServer, type MemoryServer } from "../../src/testing.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { type RawRecord, rawJobRecords } from "../harness/raw-job-records.ts";
import { delay } from "../harness/wait.ts";

/** The real clock, `ms` ahead: a host whose wall clock is wrong (its timers run as everyone's). */
const aheadBy = (ms: number): Clock => ({ ...realClock, now: () => Date.now() + ms });

interface Backend {
  runtime(name: string, options?: RuntimeOptions): Promise<Runtime>;
  /** Every job record stored, read without jetstate's code. */
  records(): Promise<RawRecord[]>;
  /** Sets the schedule's `lastTick` as a writer would, without jetstate's code. */
  writeLastTick(id: string, lastTick: number): Promise<void>;
  stop(): Promise<void>;
}

const memoryBackend = (): Backend => {
  // The server's clock is the real one: the memory server stands for the NATS server here.
  const server: MemoryServer = createMemoryServer();
  const runtimes: Runtime[] = [];
  return {
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
    records: async () =>
      memoryServerState(server)
        .records.live()
        .map((e) => JSON.parse(e.value as string) as RawRecord),
    async writeLastTick(id, lastTick) {
      const kv = memoryServerState(server).schedules;
      const entry = kv.get("test", id)!;
      kv.update("test", id, JSON.stringify({ ...JSON.parse(entry.value!), lastTick }), entry.revision);
    },
    async stop() {
      for (const rt of runtimes.splice(0)) await rt.stop();
      server.close();
    },
  };
};

let made = 0;
const natsBackend = (server: NatsServerHandle, nc: NatsConnection): Backend => {
  const runtimes: Runtime[] = [];
  const prefix = `skew${++made}`;
  return {
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
    records: () => rawJobRecords(nc, `${prefix}_jobs`),
    async writeLastTick(id, lastTick) {
      const kv = await new Kvm(nc).open(`${prefix}_schedules`);
      const entry = (await kv.get(id))!;
      await kv.update(id, JSON.stringify({ ...entry.json<object>(), lastTick }), entry.revision);
    },
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

const period = 300;
const tenMinutes = 600_000;

/** The ticks of the committed jobs of `queue`, oldest first. */
const ticksOf = (records: readonly RawRecord[], queue: string): number[] =>
  records
    .filter((r) => r.queue === queue && r.phase === "committed")
    .map((r) => scheduleOfKey(r.idempotencyKey)?.tick ?? Number.NaN)
    .sort((a, b) => a - b);

/** Waits for every tick real time gave in (start + a period, end] to be a job; the early and skipped ones. */
const judge = async (backend: Backend, queue: string, start: number, end: number) => {
  const expected: number[] = [];
  for (let t = nextTick({ everyMs: period }, start + period)!; t <= end; t += period) expected.push(t);
  let ticks: number[] = [];
  let readAt = 0;
  for (const deadline = Date.now() + 5000; Date.now() < deadline; await delay(100)) {
    ticks = ticksOf(await backend.records(), queue);
    readAt = Date.now();
    if (expected.every((t) => ticks.includes(t))) break;
  }
  const early = ticks.filter((t) => t > readAt).map((t) => `+${t - readAt} ms`);
  const skipped = expected.filter((t) => !ticks.includes(t)).map((t) => new Date(t).toISOString());
  return { early, skipped, of: expected.length };
};

describe.each(backends)("a runtime's clock ten minutes ahead, on $name", ({ name, make }) => {
  it.each(["a runtime with a correct clock", "the runtime ahead"])(
    "schedule stored by %s: no tick fires early, none is skipped",
    async (by) => {
      const backend = make();
      try {
        const queue = "skewed";
        const aheadLog = capturedLog();
        const a = await backend.runtime("right-a");
        await backend.runtime("right-b");
        const ahead = await backend.runtime("ahead", { clock: aheadBy(tenMinutes), logger: aheadLog.logger });
        const upserter = by === "the runtime ahead" ? ahead : a;
        const start = Date.now();
        await upserter.schedules.upsert({ id: "skewed", everyMs: period, job: { queue, tasks: [1] } });
        // Ten periods by the real clock, each runtime passing every second at most.
        await delay(3000);
        const end = Date.now();
        // The ticks real time gave after the upsert (a period's slack), each a job once its fire
        // is over (a second or two at most).
        const judged = await judge(backend, queue, start, end);
        expect(judged).toEqual({ early: [], skipped: [], of: judged.of });
        expect(judged.of).toBeGreaterThanOrEqual(8);
        // The runtime ahead says so, once.
        const told = aheadLog.lines.filter((l) => l.level === 50 && /clock is .*ahead/.test(l.msg));
        expect(told.length).toBe(1);
      } finally {
        await backend.stop();
      }
    },
    30_000,
  );

  it("a since and a lastTick written by clocks ahead, by a runtime with no scheduler and by hand: none is taken as it is", async () => {
    const backend = make();
    try {
      const queue = "skewed";
      const log = capturedLog();
      await backend.runtime("right-a", { logger: log.logger });
      // One log for both: whichever reads the lastTick written ahead first says so, and replaces it.
      await backend.runtime("right-b", { logger: log.logger });
      // A runtime that runs no scheduler (the CLI's) stores the schedule: on NATS its since ten minutes
      // on (its store has read no server time: no listing); in memory the server's clock is read at
      // each use, and its since is the server's time.
      const cli = await backend.runtime("cli-ahead", {
        clock: aheadBy(tenMinutes),
        jobs: { scheduler: false },
      });
      const start = Date.now();
      const upserted = await cli.schedules.upsert({
        id: "skewed",
        everyMs: period,
        job: { queue, tasks: [1] },
      });
      if (name === "nats") expect(upserted.since).toBeGreaterThan(start + tenMinutes - 1000);
      else expect(Math.abs(upserted.since - start)).toBeLessThan(1000);
      await delay(1000);
      // A writer ahead (an older runtime) records a tick ten minutes on.
      // Again on a lost compare-and-set (a scheduler recorded a tick between its read and write).
      for (let attempt = 1; ; attempt++)
        try {
          await backend.writeLastTick("skewed", Date.now() + tenMinutes);
          break;
        } catch (error) {
          if (attempt >= 5) throw error;
        }
      await delay(2000);
      const end = Date.now();
      const judged = await judge(backend, queue, start, end);
      expect(judged).toEqual({ early: [], skipped: [], of: judged.of });
      expect(judged.of).toBeGreaterThanOrEqual(8);
      // Each said at warn (once per runtime that read it), with how far ahead.
      const warned = log.lines.filter((l) => l.level === 40 && /ahead of the server's time/.test(l.msg));
      expect(new Set(warned.map((l) => ("since" in l ? "since" : "lastTick")))).toEqual(
        new Set(name === "nats" ? ["since", "lastTick"] : ["lastTick"]),
      );
      expect(warned.every((l) => (l.aheadMs as number) > 590_000)).toBe(true);
    } finally {
      await backend.stop();
    }
  }, 30_000);
});
