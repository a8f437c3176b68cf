/**
 * A schedule whose job moves to another queue while one of its ticks is
 * being fired: job ids are per queue, so the tick's idempotency key would
 * name another job on the new queue. Scheduler A fires tick T with the old
 * record (its submit held); the schedule is upserted with a new queue; then
 * scheduler B starts and sees T unfired (`lastTick` still before it) and,
 * under `missed: "runOnce"`, fires it. The oracle is the memory server's job
 * records, read directly: one job for T.
 */
import { describe, expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker } from "../../src/testing.ts";
import {
  memorySchedulesAt,
  type RunningScheduler,
  startMemoryScheduler,
} from "../harness/memory-scheduler.ts";
import { waitUntil } from "../harness/wait.ts";

const period = 1000;
const start = 1_800_000_000_500;

describe("a schedule's job moved to another queue while a tick is being fired", () => {
  it("fires that tick once, on the queue it was fired on", async () => {
    const { clock, server, store, jobs } = memorySchedulesAt(start);
    const admin = await createRuntime({
      broker: createMemoryBroker({ server }),
      logger: silentLogger(),
      clock,
      jobs: { scheduler: false },
    });
    await admin.schedules.upsert({
      id: "moved",
      everyMs: period,
      missed: "runOnce",
      job: { queue: "q1", tasks: [1] },
    });
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const fired: string[] = [];
    const schedulers: RunningScheduler[] = [];
    const scheduler = async (holdFirst: boolean) => {
      const started = await startMemoryScheduler(server, clock, store, async (record, key) => {
        fired.push(`${record.job.queue} ${key}`);
        if (holdFirst) await held;
      });
      schedulers.push(started);
      return started;
    };
    try {
      await scheduler(true);
      await waitUntil(() => clock.pending >= 1, { timeoutMs: 2000, message: "A asleep" });
      clock.advance(period);
      await waitUntil(() => fired.length === 1, { timeoutMs: 2000, message: "A fires the tick" });
      // The job moves to q2 while A's submit of the tick is under way.
      clock.advance(100);
      await admin.schedules.upsert({
        id: "moved",
        everyMs: period,
        missed: "runOnce",
        job: { queue: "q2", tasks: [1] },
      });
      clock.advance(100);
      const b = await scheduler(false);
      release();
      // B's first pass (made at its start; the clock stands still, so it makes no other) is over once
      // B follows the schedule: a pass is one step after its list, and it starts every fire it decides
      // in that step. Once no fire of A's or B's is under way, each job they submitted is stored.
      await waitUntil(
        () => b.scheduler.states().has("moved") && schedulers.every((s) => s.tracked.size === 0),
        {
          timeoutMs: 5000,
          message: () =>
            `B's first pass over and every fire settled (B follows: ${[...b.scheduler.states().keys()]}; fires under way: ${schedulers.map((s) => s.tracked.size)}; fired: ${fired})`,
        },
      );
      const ticks = jobs().map((j) => `${j.queue} ${j.tick}`);
      // Before the fix: the tick fired by A on q1, and again by B on q2 (another job id).
      expect(ticks).toHaveLength(1);
      expect(ticks[0]).toMatch(/^q1 /);
    } finally {
      release();
      for (const s of schedulers) await s.stop();
      await admin.stop();
      server.close();
    }
  });
});
