/**
 * A schedule's ticks, computed from its stored rule: the same instants in
 * every runtime. Checked against instants worked out by hand (time zone
 * offsets and their changes from the IANA database).
 */
import { describe, expect, it } from "vitest";
import { nextTick, ticksBetween } from "../../src/api/schedule-rule.ts";
import { scheduleOfKey, tickKey } from "../../src/kernel/schedule-record.ts";

const at = (iso: string) => Date.parse(iso);

describe("the ticks of a cron with a time zone", () => {
  it("09:00 in New York is 14:00 UTC in winter and 13:00 UTC after the March change", () => {
    const rule = { cron: "0 9 * * *", timezone: "America/New_York" };
    expect(nextTick(rule, at("2026-03-07T12:00:00Z"))).toBe(at("2026-03-07T14:00:00Z"));
    // 2026-03-08 02:00 local the clocks went forward (EST → EDT).
    expect(nextTick(rule, at("2026-03-07T14:00:00Z"))).toBe(at("2026-03-08T13:00:00Z"));
    expect(nextTick(rule, at("2026-03-08T13:00:00Z"))).toBe(at("2026-03-09T13:00:00Z"));
  });

  it("a tick is strictly after the instant given; the tick itself gives the next one", () => {
    const rule = { cron: "30 8 * * 1-5", timezone: "Europe/Berlin" };
    // Friday 2026-12-04 08:30 CET = 07:30 UTC; the next is Monday the 7th.
    expect(nextTick(rule, at("2026-12-04T07:29:59.999Z"))).toBe(at("2026-12-04T07:30:00Z"));
    expect(nextTick(rule, at("2026-12-04T07:30:00Z"))).toBe(at("2026-12-07T07:30:00Z"));
  });

  it("UTC when no time zone is given; Asia/Kolkata's half-hour offset is kept", () => {
    expect(nextTick({ cron: "0 0 * * *" }, at("2026-06-01T12:00:00Z"))).toBe(at("2026-06-02T00:00:00Z"));
    expect(nextTick({ cron: "0 0 * * *", timezone: "Asia/Kolkata" }, at("2026-06-01T12:00:00Z"))).toBe(
      at("2026-06-01T18:30:00Z"),
    );
  });

  it("ticksBetween: the ticks in (after, upTo], oldest first, the latest `limit` of them", () => {
    const rule = { cron: "0 * * * *", timezone: "Europe/London" };
    const ticks = ticksBetween(rule, at("2026-01-01T00:00:00Z"), at("2026-01-01T03:00:00Z"), 10);
    expect(ticks).toEqual([
      at("2026-01-01T01:00:00Z"),
      at("2026-01-01T02:00:00Z"),
      at("2026-01-01T03:00:00Z"),
    ]);
    expect(ticksBetween(rule, at("2026-01-01T00:00:00Z"), at("2026-01-01T03:00:00Z"), 1)).toEqual([
      at("2026-01-01T03:00:00Z"),
    ]);
  });
});

describe("the ticks of everyMs", () => {
  it("are the multiples of the period since the epoch, whoever computes them", () => {
    expect(nextTick({ everyMs: 300 }, 1000)).toBe(1200);
    expect(nextTick({ everyMs: 300 }, 1200)).toBe(1500);
    expect(ticksBetween({ everyMs: 300 }, 1000, 2100, 100)).toEqual([1200, 1500, 1800, 2100]);
    expect(ticksBetween({ everyMs: 300 }, 1000, 2100, 2)).toEqual([1800, 2100]);
    expect(ticksBetween({ everyMs: 300 }, 2100, 2100, 5)).toEqual([]);
  });
});

describe("a tick's idempotency key", () => {
  it("names the schedule and the tick, and reads back; other keys are no tick", () => {
    const key = tickKey("nightly.report", at("2026-12-02T03:00:00Z"));
    expect(key).toBe("schedule:nightly.report:2026-12-02T03:00:00.000Z");
    expect(scheduleOfKey(key)).toEqual({ scheduleId: "nightly.report", tick: at("2026-12-02T03:00:00Z") });
    expect(scheduleOfKey("upload-42")).toBeUndefined();
    expect(scheduleOfKey(undefined)).toBeUndefined();
    expect(scheduleOfKey("schedule:x")).toBeUndefined();
  });
});
