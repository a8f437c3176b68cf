/**
 * Attack on `ScheduleClock.trusted` (review of 60b2016, rule of 923fb39): on a
 * CORRECT cluster (every clock right), an upsert of a new rule stamps `since`
 * and `updatedAt` alike with its time `at`, and the server stores the write
 * later: a slow server (fsync, a JetStream leader election), a publish
 * buffered across a reconnect and stored when the connection is back. The
 * write is stamped more than a second after `at`, and the rule "a since equal
 * to its updatedAt and more than 1 s behind its stamp is a clock behind's"
 * takes `since` as the stamp: every tick between `at` and the stamp is never
 * fired, by any scheduler, though the upsert answered the first of them as
 * its `nextTick` and the scheduler was running all along.
 *
 * Oracle: the server's clock (a memory server on a `ManualClock`, the host's
 * clock the same: right), read at each fire; the ticks the rule gives after
 * `at` (`nextTick`, what `rt.schedules.upsert` returns).
 */
import { describe, expect, it } from "vitest";
import { nextTick } from "../../src/api/schedule-rule.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import {
  memorySchedulesAt,
  runScheduler,
  schedulerAsleep,
  storeEverySchedule,
} from "../harness/memory-scheduler.ts";

// 200 ms after a tick of `every`: the next tick falls 800 ms after the upsert's time.
const start = 1_800_000_000_200;
const every = 1000;

describe("an upsert stored late on a correct cluster (slow server, a reconnect)", () => {
  it.each([1500, 5000])(
    "stored %i ms after its time: every tick from its time fires, on time ± a pass",
    async (lateMs) => {
      const { clock: server, store, server: memory } = memorySchedulesAt(start);
      const fired: Array<{ tick: number; serverAt: number }> = [];
      // The host's clock is the server's: right.
      const run = runScheduler({
        store,
        clock: server,
        log: silentLogger(),
        refreshMs: 1000,
        fire: async (_record, tick) => {
          fired.push({ tick, serverAt: server.now() });
        },
      });
      try {
        await schedulerAsleep(server);
        // The upsert takes its time (since = createdAt = updatedAt = at) ...
        const at = server.now();
        const promised = nextTick({ everyMs: every }, at);
        // ... and its write is stored `lateMs` later, the scheduler running meanwhile.
        for (let left = lateMs; left > 0; left -= 500) {
          server.advance(Math.min(500, left));
          await schedulerAsleep(server);
        }
        await storeEverySchedule(store, "late", every, at, "skip");
        run.scheduler.poke();
        for (let n = 0; n < 4; n++) {
          await schedulerAsleep(server);
          server.advance(1000);
        }
        await schedulerAsleep(server);
        const end = server.now();
        const expected: number[] = [];
        for (let t = promised!; t <= end; t += every) expected.push(t);
        const lost = expected.filter((t) => !fired.some((f) => f.tick === t)).map((t) => `at+${t - at} ms`);
        const twice = fired
          .filter((f, i) => fired.findIndex((g) => g.tick === f.tick) !== i)
          .map((f) => f.tick);
        // On time ± a pass: fired no later than the pass after the write's stamp, or a pass after it fell.
        const stampedAt = at + lateMs;
        const late = fired
          .filter((f) => f.serverAt > Math.max(f.tick, stampedAt) + 1000 + 50)
          .map((f) => `at+${f.tick - at} ms fired at+${f.serverAt - at} ms`);
        expect({ promised: promised! - at, lost, twice, late }).toEqual({
          promised: 800,
          lost: [],
          twice: [],
          late: [],
        });
      } finally {
        await run.stop();
        memory.close();
      }
    },
  );
});
