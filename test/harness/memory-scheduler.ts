import { memoryScheduleStore } from "../../src/adapters/memory/memory-schedule-store.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import type { ScheduleStore } from "../../src/adapters/schedule-store.ts";
import { JobRegistry } from "../../src/api/jobs.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { Scheduler, type SchedulerDeps } from "../../src/api/scheduler.ts";
import { ManualClock } from "../../src/kernel/clock.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type MissedTicks, type ScheduleRecord, scheduleOfKey } from "../../src/kernel/schedule-record.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { waitUntil } from "./wait.ts";

/**
 * A memory server on a manual clock set at `start`, its schedules store,
 * and the oracle: every job record it stores, read raw (queue, phase, and
 * the schedule tick its idempotency key names).
 */
export const memorySchedulesAt = (start: number) => {
  const clock = new ManualClock(start);
  const server = createMemoryServer({ clock });
  const store = memoryScheduleStore(memoryServerState(server).schedules, () => undefined);
  const jobs = () =>
    memoryServerState(server)
      .records.live()
      .map((e) => {
        const r = JSON.parse(e.value as string) as JobRecord;
        return { queue: r.queue, phase: r.phase, tick: scheduleOfKey(r.idempotencyKey)?.tick };
      });
  return { clock, server, store, jobs };
};

/** Stores schedule `id`: a one-task job on queue `id` every `everyMs`, set at `at`. */
export const storeEverySchedule = (
  store: ScheduleStore,
  id: string,
  everyMs: number,
  at: number,
  missed: MissedTicks = "skip",
) =>
  store.create({
    v: 1,
    id,
    rule: { everyMs },
    missed,
    job: { queue: id, tasks: [1] },
    since: at,
    createdAt: at,
    updatedAt: at,
  });

/** A scheduler as a runtime runs it, on a memory server and a manual clock; `stop` ends it and its fires. */
export interface TestScheduler {
  /** The fires under way. */
  readonly tracked: ReadonlySet<Promise<unknown>>;
  stop(): Promise<void>;
}

/** A `Scheduler` running (until `stop`), its fires tracked as a runtime tracks its work. */
export interface RunningScheduler extends TestScheduler {
  readonly scheduler: Scheduler;
}

/** Runs a `Scheduler` on `deps`; `stop` aborts its run, then waits for it and for its fires under way. */
export const runScheduler = (deps: Omit<SchedulerDeps, "track">): RunningScheduler => {
  const tracked = new Set<Promise<unknown>>();
  const scheduler = new Scheduler({
    ...deps,
    track: (_name, work) => {
      const running = work();
      tracked.add(running);
      void running.finally(() => tracked.delete(running));
    },
  });
  const stop = new AbortController();
  const running = scheduler.run(stop.signal);
  return {
    scheduler,
    tracked,
    stop: async () => {
      stop.abort();
      await running;
      await Promise.allSettled([...tracked]);
    },
  };
};

/**
 * Starts a `Scheduler` whose fire submits the tick's job through a registry
 * of its own (as the runtime wires it, without the read that skips a
 * committed job); `before` runs first (a ledger, a hold).
 */
export const startMemoryScheduler = async (
  server: ReturnType<typeof createMemoryServer>,
  clock: ManualClock,
  store: ScheduleStore,
  before: (record: ScheduleRecord, key: string) => void | Promise<void>,
  options: { readonly fireAttempts?: number } = {},
): Promise<RunningScheduler> => {
  const core = await createRuntimeCore({ logger: silentLogger(), clock }, { connect: false });
  const registry = new JobRegistry(core, createMemoryBroker({ server }), {
    reapIntervalMs: 0,
    reapGraceMs: 10_000,
    leaseMs: 10_000,
    takeOver: false,
  });
  const run = runScheduler({
    store,
    clock,
    log: silentLogger(),
    ...options,
    fire: async (record, _tick, key) => {
      await before(record, key);
      await registry.submit({ ...record.job, idempotencyKey: key });
    },
  });
  return {
    scheduler: run.scheduler,
    tracked: run.tracked,
    stop: async () => {
      await run.stop();
      await registry.stop();
      await core.stop();
    },
  };
};

/**
 * Until a scheduler whose clock no one else uses sleeps between two passes
 * (its one timer on `clock`): the pass before is over, its fires started.
 */
export const schedulerAsleep = (clock: ManualClock, message = "the scheduler asleep") =>
  waitUntil(() => clock.pending > 0, { timeoutMs: 2000, intervalMs: 1, message });
