import type { ScheduleStore } from "../../src/adapters/schedule-store.ts";
import { JobRegistry } from "../../src/api/jobs.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { Scheduler } from "../../src/api/scheduler.ts";
import type { ManualClock } from "../../src/kernel/clock.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import type { ScheduleRecord } from "../../src/kernel/schedule-record.ts";
import { createMemoryBroker, type createMemoryServer } from "../../src/testing.ts";

/** A scheduler as a runtime runs it, on a memory server and a manual clock; `stop` ends it and its fires. */
export interface TestScheduler {
  /** The fires under way. */
  readonly tracked: ReadonlySet<Promise<unknown>>;
  stop(): Promise<void>;
}

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
): Promise<TestScheduler> => {
  const core = await createRuntimeCore({ logger: silentLogger(), clock }, { connect: false });
  const registry = new JobRegistry(core, createMemoryBroker({ server }), {
    reapIntervalMs: 0,
    reapGraceMs: 10_000,
    leaseMs: 10_000,
    takeOver: false,
  });
  const tracked = new Set<Promise<unknown>>();
  const scheduler = new Scheduler({
    store,
    clock,
    log: silentLogger(),
    ...options,
    track: (_name, work) => {
      const running = work();
      tracked.add(running);
      void running.finally(() => tracked.delete(running));
    },
    fire: async (record, _tick, key) => {
      await before(record, key);
      await registry.submit({ ...record.job, idempotencyKey: key });
    },
  });
  const stop = new AbortController();
  const running = scheduler.run(stop.signal);
  return {
    tracked,
    stop: async () => {
      stop.abort();
      await running;
      await Promise.allSettled([...tracked]);
      await registry.stop();
      await core.stop();
    },
  };
};
