/**
 * A tick whose fire gave up (the server away longer than the fire's
 * attempts, which every scheduler sees alike) is fired again by a later
 * pass, not left behind the cursor for good. One scheduler on a manual
 * clock; its submits fail while `away`. The oracle is the memory server's
 * job records, read directly.
 */
import { describe, expect, it } from "vitest";
import { memoryScheduleStore } from "../../src/adapters/memory/memory-schedule-store.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { ManualClock } from "../../src/kernel/clock.ts";
import { scheduleOfKey } from "../../src/kernel/schedule-record.ts";
import { createMemoryServer } from "../../src/testing.ts";
import { startMemoryScheduler } from "../harness/memory-scheduler.ts";
import { waitUntil } from "../harness/wait.ts";

const period = 60_000;
const start = 1_800_000_000_500;

describe("a tick whose fire gave up", () => {
  it("is fired again by a later pass, once the submits go through", async () => {
    const clock = new ManualClock(start);
    const server = createMemoryServer({ clock });
    const store = memoryScheduleStore(memoryServerState(server).schedules, () => undefined);
    await store.create({
      v: 1,
      id: "away",
      rule: { everyMs: period },
      missed: "skip",
      job: { queue: "away", tasks: [1] },
      since: start,
      createdAt: start,
      updatedAt: start,
    });
    let away = true;
    const tried: string[] = [];
    const scheduler = await startMemoryScheduler(
      server,
      clock,
      store,
      (_record, key) => {
        tried.push(key);
        if (away) throw new Error("no NATS connection (the server restarting)");
      },
      { fireAttempts: 2 },
    );
    const jobs = () =>
      memoryServerState(server)
        .records.live()
        .map(
          (e) =>
            scheduleOfKey((JSON.parse(e.value as string) as { idempotencyKey?: string }).idempotencyKey)
              ?.tick,
        );
    try {
      await waitUntil(() => clock.pending >= 1, { timeoutMs: 2000, message: "asleep" });
      const tick = Math.floor(start / period) * period + period;
      clock.advance(tick - start);
      await waitUntil(() => tried.length === 2 && scheduler.tracked.size === 0, {
        timeoutMs: 5000,
        message: "both attempts made, the fire given up",
      });
      expect(jobs()).toEqual([]);
      away = false;
      // The next pass (a second on), well before the next tick. Before the fix the tick stayed
      // behind the cursor: no job for it, ever.
      for (let pass = 0; pass < 3 && jobs().length === 0; pass++) {
        await waitUntil(() => clock.pending >= 1, { timeoutMs: 2000, message: "asleep again" });
        clock.advance(1000);
        await waitUntil(() => scheduler.tracked.size === 0, { timeoutMs: 5000, message: "fires settled" });
      }
      expect(jobs()).toEqual([tick]);
      expect((await store.read("away"))?.record.lastTick).toBe(tick);
    } finally {
      await scheduler.stop();
      server.close();
    }
  });
});
