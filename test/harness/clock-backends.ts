/**
 * Runtimes on one memory server (the real clock) or one nats-server, each
 * with a clock of its own, and their job records read raw: the backends of
 * `schedules-clock.both.test.ts`, shared by the review's attacks on clocks.
 */
import { randomUUID } from "node:crypto";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { JobRegistry } from "../../src/api/jobs.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import type { SubmitHooks } from "../../src/effects/submit-job.ts";
import type { RuntimeOptions } from "../../src/index.ts";
import { type Clock, realClock } from "../../src/kernel/clock.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { scheduleOfKey } from "../../src/kernel/schedule-record.ts";
import { createMemoryBroker, createMemoryServer, type MemoryServer } from "../../src/testing.ts";
import { liveEntries } from "./kv-keys.ts";
import type { NatsServerHandle } from "./nats-server.ts";
import { type RawRecord, rawJobRecords } from "./raw-job-records.ts";
import { useServerConnection } from "./server-connection.ts";
import { waitUntil } from "./wait.ts";

/** The real clock, `ms` on (negative: behind): a host whose wall clock is wrong (its timers run as everyone's). */
export const offsetBy = (ms: number): Clock => ({ ...realClock, now: () => Date.now() + ms });

/** A submitter of its own (a registry on a connection of its own), its clock and its submits' hooks given. */
export interface ClockSubmitter {
  readonly registry: JobRegistry;
  stop(): Promise<void>;
}

/** What a submitter of `ClockBackend.submitter` runs with: its clock and the hooks of its submits. */
export interface SubmitterOptions {
  readonly clock: Clock;
  readonly hooks: SubmitHooks;
  /** Wraps the submitter's broker (a spy: `spiedBroker`); default: the broker as it is. */
  readonly wrap?: (broker: Broker) => Broker;
}

/** The registry options of a submitter that reaps nothing and takes nothing over. */
const submitterJobs = (hooks: SubmitHooks) => ({
  reapIntervalMs: 3600_000,
  reapGraceMs: 10_000,
  leaseMs: 10_000,
  takeOver: false,
  submitHooks: hooks,
});

/** A job's supervision lease as stored. */
export interface RawLease {
  readonly jobId: string;
  readonly holder: string;
  readonly until: number;
}

const isJobLease = (key: string) => !key.startsWith("heartbeat.");

export interface ClockBackend {
  runtime(name: string, options?: RuntimeOptions): Promise<Runtime>;
  /** A submitter on the same server with a clock of its own, whose submits run `hooks` after each step. */
  submitter(name: string, options: SubmitterOptions): Promise<ClockSubmitter>;
  /** Every job record stored, read without jetstate's code. */
  records(): Promise<RawRecord[]>;
  /** Every job's supervision lease stored (heartbeats left out), read without jetstate's code. */
  leases(): Promise<RawLease[]>;
  /** The schedule's stored record, read without jetstate's code. */
  schedule(id: string): Promise<Record<string, unknown> | undefined>;
  /**
   * Sets the schedule's `lastTick` as a writer would (compare-and-set on the revision it read),
   * without jetstate's code; resolves with the `lastTick` it replaced and the server's stamp of
   * the write.
   */
  writeLastTick(id: string, lastTick: number): Promise<LastTickWritten>;
  stop(): Promise<void>;
}

/** What `ClockBackend.writeLastTick` wrote over, and when the server stored the write. */
export interface LastTickWritten {
  readonly replaced: number | undefined;
  readonly storedAt: number;
}

export const memoryClockBackend = (): ClockBackend => {
  const server: MemoryServer = createMemoryServer();
  const runtimes: Runtime[] = [];
  const stops: Array<() => Promise<void>> = [];
  return {
    async runtime(name, options = {}) {
      const rt = await createRuntime({
        name,
        logger: silentLogger(),
        ...options,
        jobs: { cleanupIntervalMs: 0, reapIntervalMs: 0, ...options.jobs },
        // Its leases name it, as on NATS (a holder is the runtime's name and a few random characters).
        broker: createMemoryBroker({ server, holder: `${name}.${randomUUID().slice(0, 8)}` }),
      });
      runtimes.push(rt);
      return rt;
    },
    async submitter(name, { clock, hooks, wrap = (broker) => broker }) {
      const core = await createRuntimeCore({ name, logger: silentLogger(), clock }, { connect: false });
      const registry = new JobRegistry(
        core,
        wrap(createMemoryBroker({ server, holder: name })),
        submitterJobs(hooks),
      );
      const stop = async () => {
        await registry.stop();
        await core.stop();
      };
      stops.push(stop);
      return { registry, stop };
    },
    records: async () =>
      memoryServerState(server)
        .records.live()
        .map((e) => JSON.parse(e.value as string) as RawRecord),
    leases: async () =>
      memoryServerState(server)
        .leases.live()
        .filter((e) => isJobLease(e.key))
        .map((e) => ({ jobId: e.key, ...(JSON.parse(e.value as string) as Omit<RawLease, "jobId">) })),
    async schedule(id) {
      const entry = memoryServerState(server).schedules.get("test", id);
      return entry?.value === undefined ? undefined : JSON.parse(entry.value);
    },
    async writeLastTick(id, lastTick) {
      const kv = memoryServerState(server).schedules;
      const entry = kv.get("test", id)!;
      const read = JSON.parse(entry.value!);
      kv.update("test", id, JSON.stringify({ ...read, lastTick }), entry.revision);
      return { replaced: read.lastTick, storedAt: kv.get("test", id)!.storedAt! };
    },
    async stop() {
      for (const stop of stops.splice(0)) await stop();
      for (const rt of runtimes.splice(0)) await rt.stop();
      server.close();
    },
  };
};

let made = 0;
export const natsClockBackend = (server: NatsServerHandle, nc: NatsConnection): ClockBackend => {
  const runtimes: Runtime[] = [];
  const stops: Array<() => Promise<void>> = [];
  const prefix = `attack${++made}`;
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
    async submitter(name, { clock, hooks, wrap = (broker) => broker }) {
      const core = await createRuntimeCore({
        servers: server.url,
        prefix,
        name,
        logger: silentLogger(),
        clock,
      });
      const broker = wrap(createNatsBroker(core, { retentionMs: 3600_000, holder: name }));
      const registry = new JobRegistry(core, broker, submitterJobs(hooks));
      const stop = async () => {
        await registry.stop();
        await core.stop();
      };
      stops.push(stop);
      return { registry, stop };
    },
    records: () => rawJobRecords(nc, `${prefix}_jobs`),
    leases: async () =>
      (await liveEntries(nc, `${prefix}_leases`))
        .filter(({ key }) => isJobLease(key))
        .map(({ key, entry }) => ({ jobId: key, ...entry.json<Omit<RawLease, "jobId">>() })),
    async schedule(id) {
      const kv = await new Kvm(nc).open(`${prefix}_schedules`);
      const entry = await kv.get(id);
      return entry === null || entry.operation !== "PUT" ? undefined : entry.json<Record<string, unknown>>();
    },
    async writeLastTick(id, lastTick) {
      const kv = await new Kvm(nc).open(`${prefix}_schedules`);
      const entry = (await kv.get(id))!;
      const read = entry.json<{ lastTick?: number }>();
      const revision = await kv.update(id, JSON.stringify({ ...read, lastTick }), entry.revision);
      const written = (await kv.get(id, { revision }))!;
      return { replaced: read.lastTick, storedAt: written.created.getTime() };
    },
    async stop() {
      for (const stop of stops.splice(0)) await stop();
      for (const rt of runtimes.splice(0)) await rt.stop();
    },
  };
};

/** The ticks of the committed jobs of `queue`, oldest first (each job's tick read from its idempotency key). */
export const committedTicks = (records: readonly RawRecord[], queue: string): number[] =>
  records
    .filter((r) => r.queue === queue && r.phase === "committed")
    .map((r) => scheduleOfKey(r.idempotencyKey)?.tick ?? Number.NaN)
    .sort((a, b) => a - b);

/**
 * The backends of a test file: the memory one, and one on a nats-server the file shares
 * (started before its tests, stopped after them).
 */
export const clockBackends = (): ReadonlyArray<{ readonly name: string; make(): ClockBackend }> => {
  const served = useServerConnection();
  return [
    { name: "memory", make: memoryClockBackend },
    { name: "nats", make: () => natsClockBackend(served.server, served.nc) },
  ];
};

/**
 * A 1-task job on `queue` (no worker serves it) submitted by `rt`: it
 * stalls half a second on, and fails 20 s after its stall; returned once its
 * record, read raw, says stalled.
 */
export const submitStalled = async (backend: ClockBackend, rt: Runtime, queue: string) => {
  const job = await rt.jobs.submit({
    queue,
    tasks: [1],
    lane: false,
    stallAfterMs: 500,
    stalledTimeoutMs: 20_000,
  });
  await waitUntil(
    async () => (await backend.records()).some((r) => r.id === job.id && r.status === "stalled"),
    {
      timeoutMs: 10_000,
      message: "the job's record says stalled",
    },
  );
  return job;
};

/** Waits until the job's lease, read raw, names a holder whose name starts with `runtime` (a timeout says the leases last read). */
export const untilLeaseHeldBy = (backend: ClockBackend, jobId: string, runtime: string) => {
  let seen: RawLease[] = [];
  return waitUntil(
    async () => {
      seen = await backend.leases();
      return seen.find((l) => l.jobId === jobId)?.holder.startsWith(runtime) === true;
    },
    { timeoutMs: 15_000, message: () => `the lease of ${jobId} held by ${runtime}: ${JSON.stringify(seen)}` },
  );
};
