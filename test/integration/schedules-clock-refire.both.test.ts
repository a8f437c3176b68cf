import { describe, expect, it } from "vitest";
import { scheduleOfKey } from "../../src/kernel/schedule-record.ts";
import { clockBackends, committedTicks } from "../harness/clock-backends.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const backends = clockBackends();

const period = 6000;
const tenMinutes = 600_000;

describe.each(backends)("a lastTick written ahead, a runOnce schedule, on $name", ({ make }) => {
  it("a runtime starting after the fired tick's record was cleaned up does not fire it again", async () => {
    const backend = make();
    try {
      const queue = "refire";
      const handled = new Map<string, number>();
      const handler = (task: { jobId: string }) => {
        handled.set(task.jobId, (handled.get(task.jobId) ?? 0) + 1);
        return null;
      };
      const a = await backend.runtime("right-a");
      a.workers.start({ queue, handler });
      await a.schedules.upsert({
        id: "refire",
        everyMs: period,
        missed: "runOnce",
        job: { queue, tasks: [1] },
      });
      // The first tick T fired, its job finished and T recorded, early enough in its period.
      let tick = 0;
      await waitUntil(
        async () => {
          const records = await backend.records();
          const done = records.filter((r) => r.queue === queue && r.finishedAt !== undefined);
          const schedule = await backend.schedule("refire");
          if (
            !schedule ||
            done.length !== 1 ||
            schedule.lastTick !== scheduleOfKey(done[0]!.idempotencyKey)?.tick
          )
            return false;
          tick = schedule.lastTick as number;
          return true;
        },
        { timeoutMs: period + 5000, intervalMs: 20, message: "the first tick fired, finished and recorded" },
      );
      expect(Date.now()).toBeLessThan(tick + period - 3000);
      // A writer ahead (an older runtime, ten minutes on) records a tick: ahead of its entry's stamp.
      await backend.writeLastTick("refire", Date.now() + tenMinutes);
      // Retention over: T's record goes (as a seven-day retention does to a monthly tick's). None
      // at all: with 1 ms, a cleanup in the millisecond of T's end kept its record (not a ms old).
      await a.admin.cleanup({ retentionMs: 0 });
      expect(committedTicks(await backend.records(), queue)).toEqual([]);
      // Another runtime starts (a deploy, a restart) before the next tick.
      const b = await backend.runtime("right-b");
      b.workers.start({ queue, handler });
      await delay(1500);
      expect(Date.now()).toBeLessThan(tick + period);
      expect({
        refired: committedTicks(await backend.records(), queue).map((t) => `${t === tick ? "T" : t}`),
        handledTwice: [...handled.values()].filter((n) => n > 1).length,
      }).toEqual({ refired: [], handledTwice: 0 });
    } finally {
      await backend.stop();
    }
  }, 30_000);
});
