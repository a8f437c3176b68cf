/**
 * `ScheduleClock` (api/schedule-clock.ts): a scheduler's time is its clock's
 * unless that is ahead of the server's (as the store read it) by more than a
 * second, then the server's, said at error once; a record's `since` and
 * `lastTick` more than a second after the server's stamp of its entry are each
 * taken as that stamp, said at warn once per value.
 */
import { describe, expect, it } from "vitest";
import type { ScheduleStore, ServerTime, StoredSchedule } from "../../src/adapters/schedule-store.ts";
import { ScheduleClock } from "../../src/api/schedule-clock.ts";
import { realClock } from "../../src/kernel/clock.ts";
import type { Logger } from "../../src/kernel/logger.ts";
import type { ScheduleRecord } from "../../src/kernel/schedule-record.ts";
import { capturedLog } from "../harness/log-lines.ts";

const serverAt = 1_800_000_000_000;

/** A store whose only answer is its reading of the server's clock (none: undefined). */
const storeReading = (read: () => ServerTime | undefined): ScheduleStore =>
  ({ serverTime: read }) as unknown as ScheduleStore;

const atServer = (): ServerTime => ({ at: serverAt, seenAt: performance.now() });

/** A scheduler's time on a clock at `localAt`, its store reading the server's clock with `read`. */
const made = (localAt: number, read: () => ServerTime | undefined = atServer) => {
  // A host's wall clock, set by hand (`clock.at`): set back, set ahead.
  const clock = { ...realClock, at: localAt, now: () => clock.at };
  const log = capturedLog();
  const time = new ScheduleClock(clock, storeReading(read), log.logger as unknown as Logger);
  return { clock, log, time };
};

const stored = (times: { since: number; lastTick?: number }, storedAt?: number): StoredSchedule => ({
  record: {
    v: 1,
    id: "s",
    rule: { everyMs: 1000 },
    missed: "skip",
    job: { queue: "q", tasks: [1] },
    createdAt: times.since,
    updatedAt: times.since,
    ...times,
  } as ScheduleRecord,
  revision: 1,
  ...(storedAt === undefined ? {} : { storedAt }),
});

const errors = (lines: ReadonlyArray<{ level: number }>) => lines.filter((l) => l.level === 50).length;

describe("a scheduler's time", () => {
  it("is its clock's when that is within a second of the server's, or behind it", () => {
    for (const local of [serverAt + 900, serverAt - 600_000]) {
      const { time, log } = made(local);
      time.tell();
      expect(time.correction()).toBe(0);
      expect(time.now()).toBe(local);
      expect(errors(log.lines)).toBe(0);
    }
  });

  it("is its clock's while the store has read no server time", () => {
    const { time } = made(serverAt + 600_000, () => undefined);
    expect(time.now()).toBe(serverAt + 600_000);
  });

  it("is the server's when its clock is ahead by more than a second, said at error once until it comes back", () => {
    const { clock, time, log } = made(serverAt + 600_000);
    // The server's time carried on by the monotonic clock: a few ms at most pass in this test.
    expect(time.now()).toBeGreaterThanOrEqual(serverAt);
    expect(time.now()).toBeLessThan(serverAt + 100);
    time.tell();
    time.tell();
    expect(log.lines.filter((l) => l.level === 50).map((l) => (l.aheadMs as number) > 599_000)).toEqual([
      true,
    ]);
    // Back within the tolerance (the host's clock set right), then ahead again: said again.
    clock.at = serverAt;
    time.tell();
    clock.at = serverAt + 5000;
    time.tell();
    time.tell();
    expect(errors(log.lines)).toBe(2);
  });
});

describe("a record's times", () => {
  it("are taken as they are within a second of the server's stamp of their entry, or with no stamp", () => {
    const { time, log } = made(serverAt);
    expect(time.trusted(stored({ since: serverAt - 10, lastTick: serverAt + 900 }, serverAt))).toEqual({
      since: serverAt - 10,
      lastTick: serverAt + 900,
    });
    expect(time.trusted(stored({ since: serverAt + 600_000, lastTick: serverAt + 600_000 }))).toMatchObject({
      since: serverAt + 600_000,
      lastTick: serverAt + 600_000,
    });
    expect(log.lines).toEqual([]);
  });

  it("a lastTick and a since ahead of the stamp are each taken as the stamp, said at warn once per value", () => {
    const { time, log } = made(serverAt);
    const ahead = stored({ since: serverAt + 600_000, lastTick: serverAt + 600_000 }, serverAt);
    expect(time.trusted(ahead)).toEqual({ since: serverAt, lastTick: serverAt });
    expect(time.trusted(ahead)).toEqual({ since: serverAt, lastTick: serverAt });
    const warned = log.lines.filter((l) => l.level === 40);
    expect(warned.map((l) => ["since" in l ? "since" : "lastTick", l.aheadMs])).toEqual([
      ["since", 600_000],
      ["lastTick", 600_000],
    ]);
    // Another value ahead: said again.
    time.trusted(stored({ since: serverAt, lastTick: serverAt + 700_000 }, serverAt));
    expect(log.lines.filter((l) => l.level === 40)).toHaveLength(3);
  });
});
