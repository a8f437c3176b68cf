/**
 * `everyUntil`: the job actor's lease renewal and lost-task check as loops
 * of the runtime's `LoopGroup`. One step at a time on the runtime's clock,
 * and an end that waits for the step in flight.
 */
import { describe, expect, it } from "vitest";
import { everyUntil, ManualClock, pause } from "../../src/kernel/clock.ts";

/** A step that stays in flight until the test lets it end. */
const heldStep = () => {
  const ends: Array<() => void> = [];
  let calls = 0;
  const step = () => {
    calls++;
    return new Promise<void>((resolve) => ends.push(resolve));
  };
  return { step, calls: () => calls, endOne: () => ends.shift()?.() };
};

const settled = async (promise: Promise<unknown>) => {
  let done = false;
  void promise.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  for (let i = 0; i < 5; i++) await Promise.resolve();
  return done;
};

describe("everyUntil", () => {
  it("ticks on the clock and skips ticks while a step is in flight", async () => {
    const clock = new ManualClock();
    const ac = new AbortController();
    const { step, calls, endOne } = heldStep();
    const loop = everyUntil(clock, 100, step, ac.signal);
    clock.advance(99);
    expect(calls()).toBe(0);
    clock.advance(1);
    expect(calls()).toBe(1);
    clock.advance(300); // still in flight: no second step
    expect(calls()).toBe(1);
    endOne();
    await Promise.resolve();
    clock.advance(100);
    expect(calls()).toBe(2);
    endOne();
    ac.abort();
    await loop;
    expect(clock.pending).toBe(0);
  });

  it("ends only once the step in flight has settled, and runs none after the abort", async () => {
    const clock = new ManualClock();
    const ac = new AbortController();
    const { step, calls, endOne } = heldStep();
    const loop = everyUntil(clock, 10, step, ac.signal);
    clock.advance(10);
    ac.abort();
    expect(await settled(loop)).toBe(false);
    expect(clock.pending).toBe(0);
    endOne();
    expect(await settled(loop)).toBe(true);
    clock.advance(100);
    expect(calls()).toBe(1);
  });

  it("a step with nothing to do (undefined) keeps the loop going; one that rejects ends it with its error", async () => {
    const clock = new ManualClock();
    let n = 0;
    const loop = everyUntil(
      clock,
      10,
      () => (++n < 3 ? undefined : Promise.reject(new Error("broken"))),
      new AbortController().signal,
    );
    clock.advance(30);
    await expect(loop).rejects.toThrow("broken");
    expect(clock.pending).toBe(0);
  });

  it("an aborted signal ends it at once", async () => {
    const clock = new ManualClock();
    await everyUntil(clock, 10, () => Promise.resolve(), AbortSignal.abort());
    expect(clock.pending).toBe(0);
  });
});

describe("pause", () => {
  it("waits its time on the clock in timers of a minute at most, and leaves no timer", async () => {
    const clock = new ManualClock();
    const asked: number[] = [];
    const set = clock.setTimeout.bind(clock);
    clock.setTimeout = (fn, ms) => {
      asked.push(ms);
      return set(fn, ms);
    };
    let done: boolean | undefined;
    const days30 = 30 * 24 * 3600 * 1000;
    void pause(clock, days30, new AbortController().signal).then((passed) => {
      done = passed;
    });
    // One timer at a time, none longer than a minute (Node's longest is 24.8 days; a timer runs
    // on the monotonic clock, which a suspended machine leaves behind the wall clock).
    clock.advance(2 ** 31 - 2);
    await Promise.resolve();
    expect(done).toBeUndefined();
    expect(clock.pending).toBe(1);
    clock.advance(days30);
    await Promise.resolve();
    expect(done).toBe(true);
    expect(clock.pending).toBe(0);
    expect(asked.length).toBeGreaterThan(1);
    expect(asked.filter((ms) => ms > 60_000)).toEqual([]);
  });

  it("ends at once, false, when its signal aborts", async () => {
    const clock = new ManualClock();
    const stop = new AbortController();
    const paused = pause(clock, 60_000, stop.signal);
    stop.abort();
    await expect(paused).resolves.toBe(false);
    expect(clock.pending).toBe(0);
  });
});
