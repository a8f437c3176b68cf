import { type Clock, realClock } from "../../src/kernel/clock.ts";

/**
 * The real clock, its wall time steppable (NTP stepping it, a VM resumed): `step(ms)` moves
 * `now()` ahead (or back, negative), while its monotonic clock and its timers are untouched.
 */
export const steppedClock = () => {
  let ahead = 0;
  const clock: Clock = { ...realClock, now: () => Date.now() + ahead };
  return {
    clock,
    step: (ms: number) => {
      ahead += ms;
    },
  };
};
