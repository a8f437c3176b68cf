/**
 * A job actor's start times (api/job-times.ts `jobStartTimes`) on a runtime
 * whose wall clock was stepped since its steady clock was made: the record's
 * wall-clock stamps it starts from still mean "that long ago" on the job's
 * clock, and a finished job's end reads back as recorded.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { jobStartTimes } from "../../src/api/job-times.ts";
import { type Clock, realClock, steadyClock } from "../../src/kernel/clock.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";

/** A wall clock stepped `stepMs` ahead (negative: back) once its steady clock is made. */
const stepped = (stepMs: number) => {
  const t = { wall: 1_700_000_000_000, monotonic: 100 };
  const clock: Clock = { ...realClock, now: () => t.wall, monotonic: () => t.monotonic };
  const steady = steadyClock(clock);
  t.monotonic += 1000;
  t.wall += 1000 + stepMs;
  return { clock, steady };
};

/** No reading of the server's clock: the writer's `updatedAt` is the stamp. */
const broker = { leases: { serverTime: () => undefined } } as unknown as Broker;

describe("jobStartTimes", () => {
  for (const stepMs of [60_000, -60_000])
    it(`a stall stamped 5 s ago is 5 s old on the job's clock (wall clock stepped ${stepMs} ms)`, () => {
      const { clock, steady } = stepped(stepMs);
      const record = { updatedAt: clock.now() - 5000 } as JobRecord;
      const times = jobStartTimes(clock, steady, broker, record, "stalled", undefined);
      expect(times.now).toBe(steady.now());
      expect(times.wallAhead).toBe(stepMs);
      expect(times.now - (times.stalledSince ?? 0)).toBe(5000);
    });

  it("a finished job's end reads back as recorded (the snapshot adds wallAhead back)", () => {
    const { clock, steady } = stepped(-60_000);
    const record = { updatedAt: 1, finishedAt: clock.now() - 7000 } as JobRecord;
    const times = jobStartTimes(clock, steady, broker, record, "succeeded", undefined);
    expect(times.now + (times.wallAhead ?? 0)).toBe(record.finishedAt);
    expect(times).not.toHaveProperty("stalledSince");
  });
});
