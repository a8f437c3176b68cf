/**
 * superviseLoop keeps a consume loop alive: the body runs on the client the
 * port hands out, is started again after it returns or throws (after a pause
 * that doubles while it keeps failing quickly, capped), and ends for good on
 * "done", on abort, or when the port says the runtime stopped.
 *
 * Fake timers drive the pauses: each body start is stamped with the fake
 * clock, so the pauses are checked exactly, against values worked out by hand.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { sleep, superviseLoop } from "../../src/effects/supervise-loop.ts";
import type { Logger } from "../../src/kernel/logger.ts";

/** A logger that only records what it was asked to log. */
const recordingLog = () => {
  const lines: { level: "debug" | "warn"; fields: Record<string, unknown>; msg: string }[] = [];
  const log = {
    debug: (fields: Record<string, unknown>, msg: string) => lines.push({ level: "debug", fields, msg }),
    warn: (fields: Record<string, unknown>, msg: string) => lines.push({ level: "warn", fields, msg }),
  } as unknown as Logger;
  return { log, lines };
};

const port = (client = "client-1") => ({
  whenConnected: vi.fn(async (_signal: AbortSignal) => client),
});

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe("superviseLoop", () => {
  it("runs the body on the connected client and ends when it returns done", async () => {
    const { log, lines } = recordingLog();
    const p = port("c7");
    const seen: string[] = [];
    const controller = new AbortController();
    await superviseLoop(
      p,
      async (client) => {
        seen.push(client);
        return "done";
      },
      controller.signal,
      { name: "feed", log },
    );
    expect(seen).toEqual(["c7"]);
    expect(p.whenConnected).toHaveBeenCalledTimes(1);
    expect(p.whenConnected.mock.calls[0]![0]).toBe(controller.signal);
    expect(lines).toEqual([]);
  });

  it("restarts a body that keeps ending, pausing 2, 4, 8, then capped at 10 (base 1, max 10)", async () => {
    const { log, lines } = recordingLog();
    const controller = new AbortController();
    const starts: number[] = [];
    const loop = superviseLoop(
      port(),
      async () => {
        starts.push(Date.now());
        if (starts.length === 6) controller.abort();
        return "ended";
      },
      controller.signal,
      { name: "tasks", log, pauseMs: 1, maxPauseMs: 10 },
    );
    await vi.advanceTimersByTimeAsync(100);
    await loop;
    // Pauses: min(1·2, 10)=2, 4, 8, min(16, 10)=10, 10.
    expect(starts).toEqual([0, 2, 6, 14, 24, 34]);
    // Every end but the last (aborted) is logged as a restart, at debug level, naming the loop.
    expect(lines).toHaveLength(5);
    for (const line of lines) {
      expect(line).toEqual({ level: "debug", fields: { loop: "tasks" }, msg: "loop ended; restarting" });
    }
  });

  it("defaults: pauses start at 200 ms (100 doubled) and are capped at 5 s", async () => {
    const { log } = recordingLog();
    const controller = new AbortController();
    const starts: number[] = [];
    const loop = superviseLoop(
      port(),
      async () => {
        starts.push(Date.now());
        if (starts.length === 8) controller.abort();
        throw new Error("consumer gone");
      },
      controller.signal,
      { name: "tasks", log },
    );
    await vi.advanceTimersByTimeAsync(20_000);
    await loop;
    // 200, 400, 800, 1600, 3200, then min(6400, 5000) = 5000 twice.
    const gaps = starts.slice(1).map((t, n) => t - starts[n]!);
    expect(gaps).toEqual([200, 400, 800, 1600, 3200, 5000, 5000]);
  });

  it("logs a failing body as a warning with its error, and starts it again", async () => {
    const { log, lines } = recordingLog();
    const controller = new AbortController();
    const boom = new Error("iterator broke");
    let runs = 0;
    const loop = superviseLoop(
      port(),
      async () => {
        runs++;
        if (runs === 1) throw boom;
        return "done";
      },
      controller.signal,
      { name: "watch", log, pauseMs: 5 },
    );
    await vi.advanceTimersByTimeAsync(50);
    await loop;
    expect(runs).toBe(2);
    expect(lines).toEqual([
      { level: "warn", fields: { loop: "watch", err: boom }, msg: "loop failed; restarting" },
    ]);
  });

  it("a body that ran for more than 5 s is restarted after the base pause, not a doubled one", async () => {
    const { log } = recordingLog();
    const controller = new AbortController();
    const starts: number[] = [];
    const loop = superviseLoop(
      port(),
      async () => {
        starts.push(Date.now());
        if (starts.length === 4) {
          controller.abort();
          return "ended";
        }
        // The first two runs fail at once (pauses 20, 40); the third runs for 5001 ms of the fake
        // clock (no wall-clock wait: the advance below runs it). A fixed delay is the scenario
        // here, not a wait for a state: the run's length, just past the 5 s threshold.
        if (starts.length === 3) await new Promise((resolve) => setTimeout(resolve, 5001));
        throw new Error("fail");
      },
      controller.signal,
      { name: "long", log, pauseMs: 10, maxPauseMs: 1000 },
    );
    await vi.advanceTimersByTimeAsync(10_000);
    await loop;
    expect(starts).toEqual([0, 20, 60, 60 + 5001 + 10]);
  });

  it("a body that ran exactly 5 s still counts as failing fast (the pause doubles)", async () => {
    const { log } = recordingLog();
    const controller = new AbortController();
    const starts: number[] = [];
    const loop = superviseLoop(
      port(),
      async () => {
        starts.push(Date.now());
        if (starts.length === 2) {
          controller.abort();
          return "ended";
        }
        // A run of 5000 ms of the fake clock (no wall-clock wait): the run's length, exactly the
        // 5 s threshold, is the scenario, not a wait for a state.
        await new Promise((resolve) => setTimeout(resolve, 5000));
        return "ended";
      },
      controller.signal,
      { name: "edge", log, pauseMs: 10 },
    );
    await vi.advanceTimersByTimeAsync(10_000);
    await loop;
    expect(starts).toEqual([0, 5000 + 20]);
  });

  it("ends without logging when aborted while the body fails, and when the port says stopped", async () => {
    const { log, lines } = recordingLog();
    const controller = new AbortController();
    await superviseLoop(
      port(),
      async () => {
        controller.abort();
        throw new Error("aborted mid-run");
      },
      controller.signal,
      { name: "x", log },
    );
    expect(lines).toEqual([]);

    const stoppedPort = { whenConnected: vi.fn(async () => Promise.reject(new Error("runtime stopped"))) };
    const body = vi.fn(async () => "ended");
    await superviseLoop(stoppedPort, body, new AbortController().signal, { name: "y", log });
    expect(body).not.toHaveBeenCalled();
    expect(stoppedPort.whenConnected).toHaveBeenCalledTimes(1);
  });

  it("an abort during the pause ends the loop at once, without waiting the pause out", async () => {
    const { log } = recordingLog();
    const controller = new AbortController();
    let runs = 0;
    const loop = superviseLoop(
      port(),
      async () => {
        runs++;
        return "ended";
      },
      controller.signal,
      { name: "p", log, pauseMs: 1000 },
    );
    await vi.advanceTimersByTimeAsync(1);
    controller.abort();
    await loop;
    expect(Date.now()).toBe(1);
    expect(runs).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("never starts when the signal is already aborted", async () => {
    const { log } = recordingLog();
    const p = port();
    const controller = new AbortController();
    controller.abort();
    await superviseLoop(p, async () => "ended", controller.signal, { name: "z", log });
    expect(p.whenConnected).not.toHaveBeenCalled();
  });
});

describe("sleep", () => {
  it("resolves after the time, and leaves no timer or listener behind when aborted early", async () => {
    let resolved = false;
    void sleep(50).then(() => {
      resolved = true;
    });
    await vi.advanceTimersByTimeAsync(49);
    expect(resolved).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(resolved).toBe(true);

    const controller = new AbortController();
    const removed = vi.spyOn(controller.signal, "removeEventListener");
    const slept = sleep(10_000, controller.signal);
    controller.abort();
    await slept;
    expect(Date.now()).toBe(50);
    expect(vi.getTimerCount()).toBe(0);
    expect(removed).toHaveBeenCalledWith("abort", expect.any(Function));
  });

  it("resolves at once for a signal already aborted", async () => {
    const controller = new AbortController();
    controller.abort();
    await sleep(10_000, controller.signal);
    expect(Date.now()).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("a sleep that ran out removes its abort listener", async () => {
    const controller = new AbortController();
    const removed = vi.spyOn(controller.signal, "removeEventListener");
    const slept = sleep(5, controller.signal);
    await vi.advanceTimersByTimeAsync(5);
    await slept;
    expect(removed).toHaveBeenCalledWith("abort", expect.any(Function));
  });
});

describe("superviseLoop's warnings", () => {
  it("warns once per spell of the same failure, its repeats at debug; another failure warns again", async () => {
    const { log, lines } = recordingLog();
    const controller = new AbortController();
    const failures = ["no JetStream", "no JetStream", "no JetStream", "consumer gone", "no JetStream"];
    let runs = 0;
    const loop = superviseLoop(
      port(),
      async () => {
        const failure = failures[runs++];
        if (failure === undefined) {
          controller.abort();
          return "ended";
        }
        throw new Error(failure);
      },
      controller.signal,
      { name: "feed", log, pauseMs: 1, maxPauseMs: 4 },
    );
    await vi.advanceTimersByTimeAsync(100);
    await loop;
    expect(lines.map((l) => [l.level, (l.fields.err as Error).message])).toEqual([
      ["warn", "no JetStream"],
      ["debug", "no JetStream"],
      ["debug", "no JetStream"],
      ["warn", "consumer gone"],
      ["warn", "no JetStream"],
    ]);
  });

  it("logs the failure as the port explains it", async () => {
    const { log, lines } = recordingLog();
    const controller = new AbortController();
    const explainedError = new Error("the server has no JetStream");
    const explaining = {
      ...port("c1"),
      explain: vi.fn((_client: string, _error: unknown, _operation: string) => explainedError),
    };
    const raw = new Error("jetstream is not enabled");
    let runs = 0;
    const loop = superviseLoop(
      explaining,
      async () => {
        if (runs++ > 0) return "done";
        throw raw;
      },
      controller.signal,
      { name: "feed", log, pauseMs: 1 },
    );
    await vi.advanceTimersByTimeAsync(50);
    await loop;
    expect(explaining.explain).toHaveBeenCalledWith("c1", raw, "feed");
    expect(lines).toEqual([
      { level: "warn", fields: { loop: "feed", err: explainedError }, msg: "loop failed; restarting" },
    ]);
  });
});
