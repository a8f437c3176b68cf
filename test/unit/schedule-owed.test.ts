/**
 * The schedule statechart's owed ticks (given up on a failure a later
 * attempt may mend): kept in order whatever `lastTick` says, handed out
 * again by the next `ticks.due` that names them, and bounded.
 */
import { describe, expect, it } from "vitest";
import { initialTransition, transition } from "xstate";
import { nextTick } from "../../src/api/schedule-rule.ts";
import { ConnectionUnavailable } from "../../src/kernel/errors.ts";
import { scheduleOfKey, tickKey } from "../../src/kernel/schedule-record.ts";
import { maxOwed, type ScheduleEvent, scheduleMachine } from "../../src/machines/schedule.machine.ts";
import { capturedLog } from "../harness/log-lines.ts";
import {
  memorySchedulesAt,
  runScheduler,
  schedulerAsleep,
  storeEverySchedule,
} from "../harness/memory-scheduler.ts";
import { waitUntil } from "../harness/wait.ts";

const start = () => initialTransition(scheduleMachine, { missed: "skip", cursor: 0 })[0];
const step = (snapshot: ReturnType<typeof start>, event: ScheduleEvent) =>
  transition(scheduleMachine, snapshot, event)[0];

describe("owed ticks", () => {
  it("stay owed past a later tick recorded, and leave once handed out", () => {
    let s = step(start(), { type: "ticks.due", ticks: [1000, 2000] });
    s = step(s, { type: "fire.settled", ok: false, again: 1000 });
    s = step(s, { type: "fire.settled", ok: true });
    s = step(s, { type: "tick.recorded", lastTick: 5000 });
    expect(s.context).toMatchObject({ owed: [1000], cursor: 5000 });
    s = step(s, { type: "ticks.due", ticks: [1000, 6000] });
    expect(s.context).toMatchObject({ owed: [], cursor: 6000, inFlight: 2 });
  });

  it(`keep the latest ${maxOwed}: the oldest past it is given up`, () => {
    const ticks = Array.from({ length: maxOwed + 5 }, (_, n) => (n + 1) * 1000);
    let s = step(start(), { type: "ticks.due", ticks });
    for (const tick of [...ticks].reverse()) s = step(s, { type: "fire.settled", ok: false, again: tick });
    expect(s.context.owed).toHaveLength(maxOwed);
    expect(s.context.owed[0]).toBe(6000);
    expect(s.context.owed.at(-1)).toBe(ticks.at(-1));
  });
});

/**
 * The same on a real `Scheduler` (memory schedules store, manual clock, one
 * submit a round): what it fires again, what it gives up, what it says, and
 * the rounds it keeps per tick (`rounds()`, a test accessor). The oracles
 * are the ticks the rule has (computed here), the fires the scheduler asked
 * for, and its log.
 */
describe("owed ticks on the scheduler", () => {
  const id = "owed";
  const every = 1000;
  const start = 1_800_000_000_000; // a tick: the next is `every` on
  const tickAt = (n: number) => start + n * every;
  const ticksFrom = (first: number, count: number) =>
    Array.from({ length: count }, (_, n) => tickAt(first + n));
  const byTime = (ticks: readonly number[]) => [...ticks].sort((a, b) => a - b);
  /** Fresh ticks a pass hands out at most (`maxCatchUp` in scheduler.ts), and as many owed ones. */
  const perPass = 20;
  /** Rounds of a tick's fire before it is given up for good (`fireRounds` in scheduler.ts). */
  const fireRounds = 10;
  const unavailable = () =>
    new ConnectionUnavailable({ message: "no NATS connection (the server restarting)" });

  /** One schedule every second from `start`; its scheduler fires through `fire`, each tick asked is kept. */
  const setUp = async (fire: (tick: number) => void | Promise<void>) => {
    const { clock, server, store } = memorySchedulesAt(start);
    await storeEverySchedule(store, id, every, start);
    const log = capturedLog();
    const asked: number[] = [];
    const run = runScheduler({
      store,
      clock,
      log: log.logger,
      refreshMs: 60_000,
      fireAttempts: 1,
      fire: async (_record, tick) => {
        asked.push(tick);
        await fire(tick);
      },
    });
    await schedulerAsleep(clock);
    return {
      asked,
      /** Changes the schedule's rule to every `everyMs`, as an upsert with a new rule does. */
      async changeRule(everyMs: number) {
        const stored = (await store.read(id))!;
        const at = clock.now();
        await store.update(
          { ...stored.record, rule: { everyMs }, since: at, updatedAt: at },
          stored.revision,
        );
      },
      /** Lines logged with `msg`. */
      told: (msg: string) => log.lines.filter((line) => line.msg === msg),
      owed: () => run.scheduler.states().get(id)?.context.owed,
      rounds: () => run.scheduler.rounds().get(id),
      /** The clock `ms` on, until that pass is over and has asked for `fires` ticks in all. */
      async pass(ms: number, fires: () => boolean = () => true) {
        await schedulerAsleep(clock);
        clock.advance(ms);
        await schedulerAsleep(clock, "the pass over");
        await waitUntil(fires, { timeoutMs: 5000, intervalMs: 1, message: "the pass's fires asked" });
      },
      /** Until at most `left` fires are under way. */
      settled: (left = 0) =>
        waitUntil(() => run.tracked.size <= left, {
          timeoutMs: 5000,
          intervalMs: 1,
          message: "fires settled",
        }),
      async stop() {
        await run.stop();
        server.close();
      },
    };
  };

  it.each([
    // Each failure past the cap drops the oldest owed tick (`droppedFromOwed`'s owed before).
    [
      "the oldest fail first",
      (outage: readonly number[]) => [outage.slice(0, maxOwed), outage.slice(maxOwed)],
    ],
    // Each failure past the cap is older than every tick owed: the tick failing is the one dropped.
    [
      "the newest fail first",
      (outage: readonly number[]) => [outage.slice(perPass), outage.slice(0, perPass)],
    ],
  ])(
    `past ${maxOwed} owed (%s), the oldest are given up: said once each, never fired again, their rounds not kept`,
    async (_name, batches) => {
      let away = true;
      // The server away: each fire hangs (in flight, not handed out again) until the test fails it.
      const fail = new Map<number, () => void>();
      const t = await setUp(async (tick) => {
        if (!away) return;
        await new Promise<void>((resolve) => fail.set(tick, resolve));
        throw unavailable();
      });
      try {
        const outage = ticksFrom(1, maxOwed + perPass);
        while (t.asked.length < outage.length) {
          const before = t.asked.length;
          await t.pass(
            perPass * every,
            () => t.asked.length === before + perPass && fail.size === before + perPass,
          );
        }
        expect(t.asked).toEqual(outage);
        away = false;
        let failed = 0;
        for (const batch of batches(outage)) {
          for (const tick of batch) fail.get(tick)?.();
          failed += batch.length;
          await t.settled(outage.length - failed);
        }
        // Each failed once: owed are the latest `maxOwed`; the older ones are given up here.
        const dropped = outage.slice(0, perPass);
        const kept = outage.slice(perPass);
        expect(t.owed()).toEqual(kept);
        const tooMany = "tick not fired here; given up (too many ticks owed)";
        expect(byTime(t.told(tooMany).map((line) => scheduleOfKey(line.key as string)?.tick ?? 0))).toEqual(
          dropped,
        );
        expect(t.rounds()).toEqual(new Map(kept.map((tick) => [tick, 1])));
        // The server back: each pass hands out the oldest owed ticks, with the tick that fell.
        const beforeBack = t.asked.length;
        await t.pass(every, () => t.asked.length === beforeBack + perPass + 1);
        expect(byTime(t.asked.slice(beforeBack))).toEqual([
          ...kept.slice(0, perPass),
          tickAt(outage.length + 1),
        ]);
        for (let pass = 0; pass < maxOwed && (t.owed()?.length ?? 0) > 0; pass++) {
          await t.settled();
          await t.pass(every);
        }
        await t.settled();
        expect(t.owed()).toEqual([]);
        // Each owed tick fired again once, each fresh one once; a dropped one never.
        const again = t.asked.slice(beforeBack);
        expect(again.filter((tick) => dropped.includes(tick))).toEqual([]);
        expect(new Set(again).size).toBe(again.length);
        expect(byTime(again.filter((tick) => tick <= outage.at(-1)!))).toEqual(kept);
        expect(t.rounds()).toEqual(new Map());
        expect(t.told(tooMany)).toHaveLength(perPass);
      } finally {
        for (const release of fail.values()) release();
        await t.stop();
      }
    },
  );

  it("a rule changed while a tick is owed: the old rule's tick is given up, said once, never fired again", async () => {
    const failing = tickAt(1);
    const t = await setUp((tick) => {
      if (tick === failing) throw unavailable();
    });
    try {
      await t.pass(every, () => t.asked.length === 1);
      await t.settled();
      expect(t.owed()).toEqual([failing]);
      await t.changeRule(3 * every);
      // The next passes read the new rule; its first tick is its first after the change.
      await t.pass(every);
      await t.pass(3 * every, () => t.asked.length === 2);
      await t.settled();
      expect(t.asked).toEqual([failing, nextTick({ everyMs: 3 * every }, failing)]);
      expect(t.owed()).toEqual([]);
      const told = t.told("ticks owed under the schedule's old rule given up: its rule or queue changed");
      expect(told.map((line) => line.ticks)).toEqual([[new Date(failing).toISOString()]]);
    } finally {
      await t.stop();
    }
  });

  it("a fire of the old rule failing after the rule changed: given up and said so, never owed", async () => {
    const failing = tickAt(1);
    let fail: () => void = () => undefined;
    const t = await setUp(async (tick) => {
      if (tick !== failing) return;
      // In flight until the test fails it, after the rule changed.
      await new Promise<void>((resolve) => {
        fail = resolve;
      });
      throw unavailable();
    });
    try {
      await t.pass(every, () => t.asked.length === 1);
      await t.changeRule(3 * every);
      await t.pass(every);
      fail();
      await t.settled();
      expect(t.told("tick not fired yet; the next pass fires it again")).toEqual([]);
      expect(
        t.told(
          "tick of the schedule's old rule not fired; given up: it was removed, or its rule or queue changed",
        ),
      ).toHaveLength(1);
      await t.pass(3 * every, () => t.asked.length === 2);
      await t.settled();
      expect(t.asked).toEqual([failing, nextTick({ everyMs: 3 * every }, failing)]);
      expect(t.owed()).toEqual([]);
    } finally {
      fail();
      await t.stop();
    }
  });

  it(`a tick failing round after round is fired again once a pass, then given up after ${fireRounds} rounds`, async () => {
    const failing = tickAt(1);
    const t = await setUp((tick) => {
      if (tick === failing) throw unavailable();
    });
    const asks = () => t.asked.filter((tick) => tick === failing).length;
    try {
      for (let round = 1; round <= fireRounds + 3; round++) {
        const before = t.asked.length;
        // The failing tick (while owed) and the tick that fell, each asked once.
        const fires = before + (round <= fireRounds ? (round === 1 ? 1 : 2) : 1);
        await t.pass(every, () => t.asked.length === fires);
        await t.settled();
        expect(asks()).toBe(Math.min(round, fireRounds));
        expect(t.asked.slice(before).at(-1)).toBe(tickAt(round));
        if (round < fireRounds) {
          expect(t.owed()).toEqual([failing]);
          expect(t.rounds()).toEqual(new Map([[failing, round]]));
        } else {
          expect(t.owed()).toEqual([]);
          expect(t.rounds()).toEqual(new Map());
        }
      }
      const key = tickKey(id, failing);
      const tries = t.told("tick not fired yet; the next pass fires it again");
      expect(tries.map((line) => [line.key, line.rounds])).toEqual(
        Array.from({ length: fireRounds - 1 }, (_, n) => [key, n + 1]),
      );
      const givenUp = t.told("tick not fired here; given up");
      expect(givenUp.map((line) => [line.key, line.rounds])).toEqual([[key, fireRounds]]);
      expect(new Set(t.asked).size).toBe(t.asked.length - (fireRounds - 1));
    } finally {
      await t.stop();
    }
  });
});

/**
 * A tick's fire tried again after a failure a later try may mend (the server away): a schedule
 * removed meanwhile (`rt.schedules.remove()`, every runtime's next pass then drops it) fired no
 * more. Its tries went on from the record the pass had read, and a later one submitted the
 * tick's job, seconds after `remove()` had answered. The oracle: the fires the scheduler asked for.
 */
describe("a schedule removed while a tick's fire is tried again", () => {
  it("is not fired again once the scheduler's pass has dropped it", async () => {
    const id = "removed";
    const start = 1_800_000_000_000;
    const { clock, server, store } = memorySchedulesAt(start);
    await storeEverySchedule(store, id, 1000, start);
    const asked: number[] = [];
    let failFirst: (error: unknown) => void = () => undefined;
    const run = runScheduler({
      store,
      clock,
      log: capturedLog().logger,
      fireAttempts: 3,
      fire: async (_record, tick) => {
        asked.push(tick);
        if (asked.length === 1)
          await new Promise((_resolve, reject) => {
            failFirst = reject;
          });
      },
    });
    try {
      await schedulerAsleep(clock);
      clock.advance(1000);
      await waitUntil(() => asked.length === 1, { timeoutMs: 5000, message: "the tick's first try" });
      await store.remove(id);
      await schedulerAsleep(clock);
      clock.advance(1000);
      await waitUntil(() => !run.scheduler.states().has(id), {
        timeoutMs: 5000,
        message: "the pass dropped the schedule",
      });
      failFirst(new ConnectionUnavailable({ message: "no NATS connection (the server restarting)" }));
      await waitUntil(() => run.tracked.size === 0, { timeoutMs: 10_000, message: "the fire settled" });
      expect(asked).toHaveLength(1);
    } finally {
      await run.stop();
      server.close();
    }
  });
});
