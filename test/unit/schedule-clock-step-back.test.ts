/**
 * Attack on `ScheduleClock` (review of 812ed9f): a runtime that started with
 * its clock ten minutes ahead (a host booted with a wrong clock), whose clock
 * NTP then set right (a step back) while the scheduler ran. Its scheduler
 * keeps the time it started at by its clock then (`#startedAt`, ten minutes
 * on) and takes it back by the correction of *now* (0, its clock is right
 * now): a schedule it first sees after the step is judged as if this
 * scheduler started ten minutes in the future. `missed: "runOnce"` fires a
 * tick ten minutes early (the "latest missed" one, which has not fallen), and
 * both policies skip every real tick here until then.
 *
 * Oracle: the server's clock (a memory server on a `ManualClock`) read at each
 * fire, and the ticks the rule gives from the schedule's `since` (computed here).
 */
import { describe, expect, it } from "vitest";
import type { Clock } from "../../src/kernel/clock.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import type { MissedTicks } from "../../src/kernel/schedule-record.ts";
import {
  memorySchedulesAt,
  runScheduler,
  schedulerAsleep,
  storeEverySchedule,
} from "../harness/memory-scheduler.ts";

const start = 1_800_000_000_000;
const every = 1000;
const tenMinutes = 600_000;

describe("a runtime's clock set back (NTP) while its scheduler runs", () => {
  it.each<MissedTicks>(["runOnce", "skip"])(
    "a schedule first seen after the step (missed: %s): no tick fires early, none is skipped",
    async (missed) => {
      const { clock: server, store, server: memory } = memorySchedulesAt(start);
      // The host's wall clock: ten minutes ahead at first, set right later; timers as everyone's.
      let offset = tenMinutes;
      const host: Clock = {
        now: () => server.now() + offset,
        setTimeout: (fn, ms) => server.setTimeout(fn, ms),
        clearTimeout: (handle) => server.clearTimeout(handle),
      };
      const fired: Array<{ tick: number; serverAt: number }> = [];
      const run = runScheduler({
        store,
        clock: host,
        log: silentLogger(),
        refreshMs: 1000,
        fire: async (_record, tick) => {
          fired.push({ tick, serverAt: server.now() });
        },
      });
      try {
        await schedulerAsleep(server);
        // NTP steps the host's clock back: right from now on.
        offset = 0;
        for (let n = 0; n < 3; n++) {
          await schedulerAsleep(server);
          server.advance(1000);
        }
        await schedulerAsleep(server);
        const since = server.now();
        await storeEverySchedule(store, "stepped", every, since, missed);
        for (let n = 0; n < 5; n++) {
          await schedulerAsleep(server);
          server.advance(1000);
        }
        await schedulerAsleep(server);
        const end = server.now();
        const early = fired.filter((f) => f.tick > f.serverAt).map((f) => `+${f.tick - f.serverAt} ms`);
        const expected: number[] = [];
        for (let t = since + every; t <= end; t += every) expected.push(t);
        const skipped = expected
          .filter((t) => !fired.some((f) => f.tick === t))
          .map((t) => `+${t - since} ms`);
        expect({ early, skipped }).toEqual({ early: [], skipped: [] });
      } finally {
        await run.stop();
        memory.close();
      }
    },
  );
});
