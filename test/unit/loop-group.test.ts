/**
 * LoopGroup: the runtime's background loops as fibers of one scope. close()
 * aborts their signal and resolves only once each has returned; a periodic
 * pass runs on time, a failed one is logged and the next runs anyway.
 * backoffSchedule: the pauses every retry and restart in src/ waits.
 */
import { Duration, Effect, Schedule } from "effect";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { LoopGroup } from "../../src/effects/loop-group.ts";
import { backoffSchedule } from "../../src/effects/retry.ts";
import type { Logger } from "../../src/kernel/logger.ts";

const recordingLog = () => {
  const lines: { level: string; fields: Record<string, unknown>; msg: string }[] = [];
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) =>
    lines.push({ level, fields, msg });
  return { log: { debug: at("debug"), warn: at("warn") } as unknown as Logger, lines };
};

describe("LoopGroup", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 0 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** Work that ends 100 ms after `signal` aborts; `ended()` says whether it has. */
  const endingLate = (signal: AbortSignal) => {
    let ended = false;
    const work = new Promise<void>((resolve) =>
      signal.addEventListener("abort", () =>
        setTimeout(() => {
          ended = true;
          resolve();
        }, 100),
      ),
    );
    return { work, ended: () => ended };
  };

  /** close() is still waiting at 99 ms and done at 100, once the work has ended. */
  const expectCloseWaitsFor = async (group: LoopGroup, ended: () => boolean) => {
    let closed = false;
    const closing = group.close().then(() => {
      closed = true;
    });
    await vi.advanceTimersByTimeAsync(99);
    expect(closed).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await closing;
    expect(ended()).toBe(true);
    expect(group.running()).toEqual([]);
  };

  it("close() waits for a loop that ends some time after its signal aborted", async () => {
    const { log } = recordingLog();
    const group = new LoopGroup(log);
    let slow: ReturnType<typeof endingLate> | undefined;
    group.run("slow", (signal) => {
      slow = endingLate(signal);
      return slow.work;
    });
    expect(group.running()).toEqual(["slow"]);
    await expectCloseWaitsFor(group, () => slow?.ended() ?? false);
  });

  it("track(): close() waits for work started elsewhere, named while it runs; a rejection is logged", async () => {
    const { log, lines } = recordingLog();
    const group = new LoopGroup(log);
    const { work, ended } = endingLate(group.signal);
    group.track("job-results:a", () => work);
    group.track("job-results:b", () => Promise.reject(new Error("boom")));
    await vi.advanceTimersByTimeAsync(0);
    expect(group.running()).toEqual(["job-results:a"]);
    expect(lines.map((l) => [l.level, l.fields.loop, l.msg])).toEqual([
      ["warn", "job-results:b", "loop failed"],
    ]);
    await expectCloseWaitsFor(group, ended);
    // Once closed, nothing more is started (nothing would wait for it).
    let started = false;
    group.track("late", async () => {
      started = true;
    });
    expect(started).toBe(false);
    expect(group.running()).toEqual([]);
  });

  it("closeWithin(): false after the wait when a loop ignores its signal, naming it; true once all ended", async () => {
    const { log } = recordingLog();
    const group = new LoopGroup(log);
    let release: (() => void) | undefined;
    group.run("stubborn", () => new Promise<void>((resolve) => (release = resolve)));
    group.run(
      "polite",
      (signal) => new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve())),
    );
    const first = group.closeWithin(1000);
    await vi.advanceTimersByTimeAsync(1000);
    expect(await first).toBe(false);
    expect(group.running()).toEqual(["stubborn"]);
    release?.();
    expect(await group.closeWithin(1000)).toBe(true);
    expect(group.running()).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("a loop slow to end holds up no other loop's end: no pass runs after close(), running() names only it", async () => {
    const { log } = recordingLog();
    const group = new LoopGroup(log);
    let passes = 0;
    let release: (() => void) | undefined;
    group.every("reaper", 10, async () => {
      passes++;
    });
    // Started last, so interrupted first were the loops ended one after the other: a periodic
    // loop ends only when interrupted, and would run its passes meanwhile.
    group.run("stubborn", () => new Promise<void>((resolve) => (release = resolve)));
    const closing = group.closeWithin(1000);
    const before = passes;
    await vi.advanceTimersByTimeAsync(100);
    expect(passes).toBe(before);
    expect(group.running()).toEqual(["stubborn"]);
    release?.();
    expect(await closing).toBe(true);
  });

  it("closeWithin(): stops waiting when the promise it is given settles, the loops still ending", async () => {
    const { log } = recordingLog();
    const group = new LoopGroup(log);
    let release: (() => void) | undefined;
    group.run("stubborn", () => new Promise<void>((resolve) => (release = resolve)));
    let giveUp: (() => void) | undefined;
    const waiting = group.closeWithin(1000, new Promise<void>((resolve) => (giveUp = resolve)));
    await vi.advanceTimersByTimeAsync(10);
    giveUp?.();
    expect(await waiting).toBe(false);
    expect(group.running()).toEqual(["stubborn"]);
    release?.();
    expect(await group.closeWithin(1000)).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("every(): passes spaced from the end of the last, a failed one logged, none after close and no timer left", async () => {
    const { log, lines } = recordingLog();
    const group = new LoopGroup(log);
    const starts: number[] = [];
    const boom = new Error("pass failed");
    group.every("reaper", 10, async () => {
      starts.push(Date.now());
      await new Promise((resolve) => setTimeout(resolve, 5));
      if (starts.length === 2) throw boom;
    });
    await vi.advanceTimersByTimeAsync(50);
    expect(starts).toEqual([0, 15, 30, 45]);
    expect(lines).toEqual([
      { level: "debug", fields: { loop: "reaper", err: boom }, msg: "periodic pass failed" },
    ]);
    await group.close();
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(starts).toHaveLength(4);
  });

  it("a later first pass waits one pause; a loop that throws is logged; nothing starts after close", async () => {
    const { log, lines } = recordingLog();
    const group = new LoopGroup(log);
    const starts: number[] = [];
    group.every("cleanup", 20, async () => void starts.push(Date.now()), "later");
    const broken = new Error("watch broke");
    group.run("watch", async () => Promise.reject(broken));
    await vi.advanceTimersByTimeAsync(45);
    expect(starts).toEqual([20, 40]);
    expect(lines).toEqual([{ level: "warn", fields: { loop: "watch", err: broken }, msg: "loop failed" }]);
    await group.close();
    const late = vi.fn(async () => undefined);
    group.run("late", late);
    group.every("late", 1, late);
    await vi.advanceTimersByTimeAsync(10);
    expect(late).not.toHaveBeenCalled();
  });
});

describe("backoffSchedule", () => {
  const delays = (schedule: Schedule.Schedule<Duration.Duration>, n: number) =>
    Effect.runSync(
      Effect.gen(function* () {
        const step = yield* Schedule.toStep(schedule);
        const out: number[] = [];
        for (let i = 0; i < n; i++) out.push(Duration.toMillis((yield* step(0, undefined))[1]));
        return out;
      }),
    );

  it("doubles from initialMs and stays at maxMs; jittered, each pause within ±20 %", () => {
    expect(delays(backoffSchedule({ initialMs: 100, maxMs: 1000 }), 6)).toEqual([
      100, 200, 400, 800, 1000, 1000,
    ]);
    expect(delays(backoffSchedule({ initialMs: 10, factor: 3 }), 3)).toEqual([10, 30, 90]);
    const jittered = delays(backoffSchedule({ initialMs: 100, maxMs: 400, jitter: true }), 5);
    [100, 200, 400, 400, 400].forEach((exact, n) => {
      expect(jittered[n]).toBeGreaterThanOrEqual(exact * 0.8);
      expect(jittered[n]).toBeLessThanOrEqual(exact * 1.2);
    });
  });
});
