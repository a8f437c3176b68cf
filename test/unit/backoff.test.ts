import { describe, expect, it } from "vitest";
import { type BackoffPolicy, backoffDelay, defaultBackoff } from "../../src/machines/connection.machine.ts";

const policy = (over: Partial<BackoffPolicy> = {}): BackoffPolicy => ({
  initialMs: 100,
  maxMs: 1_000,
  multiplier: 2,
  jitter: 0,
  ...over,
});

/** Evenly spread values in [0, 1), both ends included: deterministic, unlike Math.random. */
const randoms = Array.from({ length: 101 }, (_, i) => Math.min(i / 100, 1 - Number.EPSILON));

describe("backoffDelay", () => {
  it("without jitter: initialMs × multiplier^(attempt − 1), capped at maxMs", () => {
    const delays = [1, 2, 3, 4, 5, 6, 7].map((attempt) => backoffDelay(policy(), attempt, 0.5));
    expect(delays).toEqual([100, 200, 400, 800, 1_000, 1_000, 1_000]);
    expect(backoffDelay(policy({ multiplier: 3 }), 3, 0)).toBe(900);
    expect(backoffDelay(policy({ multiplier: 1 }), 50, 0)).toBe(100);
  });

  it("attempt 0 or below counts as the first attempt", () => {
    expect(backoffDelay(policy(), 0, 0)).toBe(100);
    expect(backoffDelay(policy(), -3, 0)).toBe(100);
  });

  it("stays at maxMs for any number of attempts (no Infinity, no NaN)", () => {
    for (const attempt of [30, 1_100, 1e6]) {
      expect(backoffDelay(policy(), attempt, 0)).toBe(1_000);
      expect(backoffDelay(policy({ jitter: 0.5 }), attempt, 0.999)).toBeLessThanOrEqual(1_000);
    }
  });

  it("with jitter j the delay lies in [(1 − j) × d, d] for the un-jittered d, growing with random", () => {
    for (const jitter of [0.1, 0.5, 1]) {
      for (const attempt of [1, 2, 3, 4, 5, 8]) {
        const d = backoffDelay(policy(), attempt, 0);
        const delays = randoms.map((r) => backoffDelay(policy({ jitter }), attempt, r));
        for (const delay of delays) {
          expect(Number.isInteger(delay)).toBe(true);
          expect(delay).toBeGreaterThanOrEqual(Math.max(1, Math.floor(d * (1 - jitter))));
          expect(delay).toBeLessThanOrEqual(d);
        }
        expect(delays[0]).toBe(Math.max(1, Math.round(d * (1 - jitter))));
        expect(delays.at(-1)).toBe(d);
        expect([...delays].sort((a, b) => a - b)).toEqual(delays);
        // Jitter actually spreads the delays (that is its point: no thundering herd).
        expect(new Set(delays).size).toBeGreaterThan(1);
      }
    }
  });

  it("full jitter never gives 0 ms (a zero delay would spin)", () => {
    expect(backoffDelay(policy({ jitter: 1 }), 1, 0)).toBe(1);
    expect(backoffDelay(policy({ jitter: 1, initialMs: 0.2, maxMs: 0.2 }), 1, 0.5)).toBe(1);
  });

  it("the default policy: 250 ms doubling to 10 s, half of it jittered", () => {
    expect(defaultBackoff).toEqual({ initialMs: 250, maxMs: 10_000, multiplier: 2, jitter: 0.5 });
    expect(backoffDelay(defaultBackoff, 1, 0)).toBe(125);
    expect(backoffDelay(defaultBackoff, 1, 1 - Number.EPSILON)).toBe(250);
    expect(backoffDelay(defaultBackoff, 7, 1 - Number.EPSILON)).toBe(10_000);
  });
});
