/**
 * Two schedulers that fire the same tick at the same moment (on NATS they
 * overlap by their round trips; here a shared `ManualClock` wakes both in one
 * step, and both read the schedule before either has fired): each submits the
 * tick's job, and the tick's idempotency key makes it one job. The oracle is
 * the memory server's job records, read directly, and the submits each
 * scheduler made.
 */
import { describe, expect, it } from "vitest";
import { memorySchedulesAt, startMemoryScheduler, storeEverySchedule } from "../harness/memory-scheduler.ts";
import { waitUntil } from "../harness/wait.ts";

const period = 1000;
const start = 1_800_000_000_500;

describe("two schedulers racing on one tick", () => {
  it("both submit it; one job per tick", async () => {
    const { clock, server, store, jobs } = memorySchedulesAt(start);
    await storeEverySchedule(store, "race", period, start);
    const submits: string[][] = [[], []];
    const schedulers = await Promise.all(
      [0, 1].map((n) =>
        startMemoryScheduler(server, clock, store, (_record, key) => void submits[n]!.push(key)),
      ),
    );
    const tracked = {
      get size() {
        return schedulers.reduce((sum, s) => sum + s.tracked.size, 0);
      },
    };
    try {
      const asleep = () => waitUntil(() => clock.pending >= 2, { timeoutMs: 2000, message: "both asleep" });
      for (let tick = 1; tick <= 3; tick++) {
        await asleep();
        clock.advance(period);
        await waitUntil(() => submits.every((s) => s.length === tick) && tracked.size === 0, {
          timeoutMs: 5000,
          message: `tick ${tick} fired by both`,
        });
      }
      // Each tick is one job...
      const records = jobs();
      const ticks = records.map((r) => r.tick);
      expect(ticks.sort()).toEqual([1, 2, 3].map((n) => Math.floor(start / period) * period + n * period));
      expect(records.every((r) => r.phase === "committed")).toBe(true);
      expect((await store.read("race"))?.record.lastTick).toBe(ticks.at(-1));
      // ...though both submitted every tick, under the same keys.
      expect(submits[0]).toEqual(submits[1]);
    } finally {
      for (const s of schedulers) await s.stop();
      server.close();
    }
  });
});
