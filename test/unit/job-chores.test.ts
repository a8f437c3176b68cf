/**
 * JobChores: the runtime's one timer for its jobs' periodic steps (lease
 * renewals, lost-task checks). The oracle is a ledger of the runs each step
 * made, on a manual clock: each step runs on its period (at most half a tick
 * late), never twice at once, never after it is removed, and the group's
 * close() waits for a run in flight.
 */
import { describe, expect, it } from "vitest";
import { JobChores } from "../../src/api/job-chores.ts";
import { LoopGroup } from "../../src/effects/loop-group.ts";
import { type Clock, ManualClock } from "../../src/kernel/clock.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("JobChores", () => {
  it("runs each step on its own period, at most one tick late", async () => {
    const clock = new ManualClock(0);
    const loops = new LoopGroup(silentLogger());
    const chores = new JobChores(clock, loops, 50);
    const runs: Record<string, number[]> = { a: [], b: [] };
    chores.add({ name: "a", everyMs: 100, run: () => void runs.a?.push(clock.now()) });
    chores.add({ name: "b", everyMs: 300, run: () => void runs.b?.push(clock.now()) });
    for (let t = 0; t < 1000; t += 10) {
      clock.advance(10);
      await settle();
    }
    expect(runs.a).toHaveLength(10); // 100, 200, … 1000
    expect(runs.b).toHaveLength(3);
    for (const [name, everyMs] of [
      ["a", 100],
      ["b", 300],
    ] as const) {
      const at = runs[name] ?? [];
      at.forEach((t, k) => {
        const gap = t - (k === 0 ? 0 : (at[k - 1] ?? 0));
        expect(gap, `${name} run ${k}`).toBeGreaterThanOrEqual(everyMs);
        expect(gap, `${name} run ${k}`).toBeLessThanOrEqual(everyMs + 50);
      });
    }
    await loops.close();
  });

  // The heartbeat and each job's lease renewal are chores: due by the wall clock, a host's
  // clock set back a minute (NTP) stopped them for a minute, and its leases ran out.
  it("runs each step on its period when the wall clock is set back", async () => {
    const manual = new ManualClock(0);
    /** The wall clock: the manual one, less what NTP set it back; its monotonic clock is the manual one. */
    let setBack = 0;
    const clock: Clock = {
      now: () => manual.now() - setBack,
      monotonic: () => manual.now(),
      setTimeout: (fn, ms) => manual.setTimeout(fn, ms),
      clearTimeout: (handle) => manual.clearTimeout(handle),
    };
    const loops = new LoopGroup(silentLogger());
    const chores = new JobChores(clock, loops, 50);
    let runs = 0;
    chores.add({ name: "renewal", everyMs: 100, run: () => void runs++ });
    const pass = async (ms: number) => {
      for (let t = 0; t < ms; t += 10) {
        manual.advance(10);
        await settle();
      }
    };
    await pass(200);
    expect(runs).toBe(2);
    setBack = 60_000;
    await pass(300);
    expect(runs, "runs in the 300 ms after the step").toBe(5);
    await loops.close();
  });

  it("never starts a step again while its last run is in flight, and forgets a removed one", async () => {
    const clock = new ManualClock(0);
    const loops = new LoopGroup(silentLogger());
    const chores = new JobChores(clock, loops, 10);
    let inFlight = 0;
    let most = 0;
    let runs = 0;
    let finish: () => void = () => undefined;
    const remove = chores.add({
      name: "slow",
      everyMs: 20,
      run: () => {
        runs++;
        inFlight++;
        most = Math.max(most, inFlight);
        return new Promise<void>((resolve) => {
          finish = () => {
            inFlight--;
            resolve();
          };
        });
      },
    });
    for (let t = 0; t < 200; t += 10) {
      clock.advance(10);
      await settle();
    }
    expect(runs).toBe(1); // the first run has not ended: no second one
    finish();
    await settle();
    clock.advance(30);
    await settle();
    expect(runs).toBe(2);
    expect(most).toBe(1);
    remove();
    finish();
    for (let t = 0; t < 200; t += 10) {
      clock.advance(10);
      await settle();
    }
    expect(runs).toBe(2);
    await loops.close();
  });

  it("close() of the runtime's loops waits for a run in flight", async () => {
    const clock = new ManualClock(0);
    const loops = new LoopGroup(silentLogger());
    const chores = new JobChores(clock, loops, 10);
    let ended = false;
    let finish: () => void = () => undefined;
    chores.add({
      name: "renewal",
      everyMs: 10,
      run: () =>
        new Promise<void>((resolve) => {
          finish = () => {
            ended = true;
            resolve();
          };
        }),
    });
    clock.advance(20);
    await settle();
    let closed = false;
    const closing = loops.close().then(() => {
      closed = true;
    });
    await settle();
    expect(closed).toBe(false);
    finish();
    await closing;
    expect(ended).toBe(true);
  });
});
