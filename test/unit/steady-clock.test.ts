/**
 * The runtime's steady clock (kernel/clock.ts `steadyClock`): elapsed time by
 * the monotonic clock on the wall clock's axis. A step of the wall clock does
 * not move it and is what `wallAhead()` reads; a clock without a monotonic
 * one (a manual clock) is its own steady clock.
 */
import { describe, expect, it } from "vitest";
import { type Clock, ManualClock, realClock, steadyClock } from "../../src/kernel/clock.ts";

/** A wall clock and a monotonic one set by hand. */
const twoClocks = () => {
  const t = { wall: 1_700_000_000_000, monotonic: 5000.4 };
  const clock: Clock = { ...realClock, now: () => t.wall, monotonic: () => t.monotonic };
  return { t, clock };
};

describe("steadyClock", () => {
  it("starts at the wall time and moves by the monotonic clock, in whole ms", () => {
    const { t, clock } = twoClocks();
    const steady = steadyClock(clock);
    expect(steady.now()).toBe(t.wall);
    t.wall += 250;
    t.monotonic += 250.3;
    expect(steady.now()).toBe(1_700_000_000_250);
    expect(steady.wallAhead()).toBe(0);
  });

  it("a step of the wall clock, ahead or back, does not move it; wallAhead reads the step", () => {
    const { t, clock } = twoClocks();
    const steady = steadyClock(clock);
    t.wall += 60_000;
    expect(steady.now()).toBe(1_700_000_000_000);
    expect(steady.wallAhead()).toBe(60_000);
    t.wall -= 120_000;
    t.monotonic += 1000;
    expect(steady.now()).toBe(1_700_000_001_000);
    expect(steady.wallAhead()).toBe(-61_000);
    // A wall-clock stamp 5 s old is 5 s old on the steady clock too.
    expect(steady.now() - (clock.now() - 5000 - steady.wallAhead())).toBe(5000);
  });

  it("is the clock itself for a clock without a monotonic one", () => {
    const clock = new ManualClock(1000);
    const steady = steadyClock(clock);
    clock.advance(1234);
    expect(steady.now()).toBe(clock.now());
    expect(steady.wallAhead()).toBe(0);
  });
});
