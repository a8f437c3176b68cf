/**
 * A tick whose fire gave up (the server away longer than the fire's
 * attempts, which every scheduler sees alike) is fired again by a later
 * pass, not left behind the cursor for good. One scheduler on a manual
 * clock; its submits fail while `away`. The oracle is the memory server's
 * job records, read directly.
 */
import { describe, expect, it } from "vitest";
import { ConnectionUnavailable, PermanentBrokerError } from "../../src/kernel/errors.ts";
import { memorySchedulesAt, startMemoryScheduler, storeEverySchedule } from "../harness/memory-scheduler.ts";
import { waitUntil } from "../harness/wait.ts";

const period = 60_000;
const start = 1_800_000_000_500;

describe("a tick whose fire gave up", () => {
  /** One schedule every `every`, one scheduler whose submits run `failing` first (two attempts a round). */
  const setUp = async (failing: (key: string) => void | Promise<void>, every = period) => {
    const { clock, server, store, jobs: stored } = memorySchedulesAt(start);
    await storeEverySchedule(store, "away", every, start);
    const scheduler = await startMemoryScheduler(server, clock, store, (_record, key) => failing(key), {
      fireAttempts: 2,
    });
    const jobs = () => stored().map((j) => j.tick);
    const tick = Math.floor(start / every) * every + every;
    /** To the tick, then until its first round of attempts settled. */
    const fireTick = async (tried: () => number) => {
      await waitUntil(() => clock.pending >= 1, { timeoutMs: 2000, message: "asleep" });
      clock.advance(tick - start);
      await waitUntil(() => tried() >= 2 && scheduler.tracked.size === 0, {
        timeoutMs: 5000,
        message: "both attempts made, the fire given up",
      });
    };
    /** `count` more passes, a second apart (the next tick is a minute on). */
    const passes = async (count: number, until: () => boolean = () => false) => {
      for (let pass = 0; pass < count && !until(); pass++) {
        await waitUntil(() => clock.pending >= 1, { timeoutMs: 2000, message: "asleep again" });
        clock.advance(1000);
        await waitUntil(() => scheduler.tracked.size === 0, { timeoutMs: 5000, message: "fires settled" });
      }
    };
    const stop = async () => {
      await scheduler.stop();
      server.close();
    };
    return { clock, scheduler, store, jobs, tick, fireTick, passes, stop };
  };

  it("is fired again by a later pass, once the submits go through", async () => {
    let away = true;
    const tried: string[] = [];
    const t = await setUp((key) => {
      tried.push(key);
      if (away) throw new ConnectionUnavailable({ message: "no NATS connection (the server restarting)" });
    });
    try {
      await t.fireTick(() => tried.length);
      expect(t.jobs()).toEqual([]);
      away = false;
      // Before the fix the tick stayed behind the cursor: no job for it, ever.
      await t.passes(3, () => t.jobs().length > 0);
      expect(t.jobs()).toEqual([t.tick]);
      expect((await t.store.read("away"))?.record.lastTick).toBe(t.tick);
    } finally {
      await t.stop();
    }
  });

  it.each([
    ["a minute", period, 1],
    // More periods than a pass hands out after the cursor (20): the tick is handed out as owed.
    ["a second", 1000, 25],
  ])(
    "is fired again though later ticks were recorded while it was still being tried (every %s)",
    async (_name, every, later) => {
      // The server away: the tick's attempts hang, then fail. Meanwhile the next tick fires
      // and records `lastTick` past it (the server back for it).
      let away = true;
      let letGo!: () => void;
      const held = new Promise<void>((resolve) => {
        letGo = resolve;
      });
      const tried: string[] = [];
      const t = await setUp(async (key) => {
        tried.push(key);
        if (!key.endsWith(new Date(t.tick).toISOString())) return;
        if (!away) return;
        await held;
        throw new ConnectionUnavailable({ message: "no NATS connection (the server restarting)" });
      }, every);
      try {
        await waitUntil(() => t.clock.pending >= 1, { timeoutMs: 2000, message: "asleep" });
        t.clock.advance(t.tick - start);
        await waitUntil(() => tried.length === 1, { timeoutMs: 2000, message: "the tick's first attempt" });
        // The next ticks: fired and recorded while the first still hangs.
        for (let second = 0; second < (later * every) / 1000; second++) {
          await waitUntil(() => t.clock.pending >= 1, { timeoutMs: 2000, message: "asleep again" });
          t.clock.advance(1000);
        }
        await waitUntil(() => t.jobs().length === later, {
          timeoutMs: 5000,
          message: "the next ticks fired",
        });
        expect((await t.store.read("away"))?.record.lastTick).toBe(t.tick + later * every);
        letGo();
        await waitUntil(() => t.scheduler.tracked.size === 0, { timeoutMs: 5000, message: "given up" });
        away = false;
        // Before the fix the recorded tick moved the cursor past it again, or (every second) it
        // was more ticks back than a pass hands out: no job for it, ever.
        await t.passes(3, () => t.jobs().includes(t.tick));
        expect(t.jobs()).toContain(t.tick);
        expect(new Set(t.jobs()).size).toBe(t.jobs().length);
      } finally {
        letGo();
        await t.stop();
      }
    },
  );

  it("on an error no retry mends, is given up once, not fired pass after pass", async () => {
    const tried: string[] = [];
    const t = await setUp((key) => {
      tried.push(key);
      throw new PermanentBrokerError({
        message: "permissions violation for publish to jetstate.tasks.away.*",
        operation: "job.tasks.publish",
      });
    });
    try {
      await t.fireTick(() => tried.length);
      await t.passes(5);
      // Its one round's attempts only (a permanent error is not even retried within it).
      expect(tried.length).toBeLessThanOrEqual(2);
      expect(t.jobs()).toEqual([]);
    } finally {
      await t.stop();
    }
  });
});
