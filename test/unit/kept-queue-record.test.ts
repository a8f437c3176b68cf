/**
 * `KeptQueueRecord`: a record seen and then gone with nothing stored at all
 * (the watch's revision 0: a server back with an empty store) is written back
 * as last seen, tried again while that fails; a deletion's marker (a revision
 * with no value) is not, and makes it forget. The oracle: the write-backs the
 * fake controls were asked for.
 */
import { describe, expect, it, vi } from "vitest";
import type { QueueControls } from "../../src/adapters/queue-controls.ts";
import { KeptQueueRecord } from "../../src/api/kept-queue-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { waitUntil } from "../harness/wait.ts";

/** Controls whose write-backs are noted, failing while `failing` is set. */
const noted = () => {
  const asked: string[] = [];
  const state = { failing: false, inFlight: 0, inFlightMost: 0 };
  const controls = {
    restoreSettings: async (_queue: string, value: string) => {
      asked.push(value);
      state.inFlight++;
      state.inFlightMost = Math.max(state.inFlightMost, state.inFlight);
      await Promise.resolve();
      state.inFlight--;
      if (state.failing) throw new Error("server away");
      return true;
    },
  } as unknown as QueueControls;
  return { asked, state, controls };
};

describe("KeptQueueRecord", () => {
  it("a record seen, then nothing stored: written back as last seen (the caller keeps its own)", async () => {
    const { asked, controls } = noted();
    const stop = new AbortController();
    const kept = new KeptQueueRecord(controls, "q", silentLogger(), stop.signal);
    expect(kept.heard("one", 3)).toBe("news");
    expect(kept.heard("two", 4)).toBe("news");
    expect(kept.heard(undefined, 0)).toBe("vanished");
    await waitUntil(() => asked.length === 1, { timeoutMs: 2000, message: "the write-back" });
    expect(asked).toEqual(["two"]);
    stop.abort();
  });

  it("a deletion's marker is news: nothing written back, then or after a store lost", async () => {
    const { asked, controls } = noted();
    const stop = new AbortController();
    const kept = new KeptQueueRecord(controls, "q", silentLogger(), stop.signal);
    kept.heard("one", 3);
    expect(kept.heard(undefined, 4)).toBe("news");
    expect(kept.heard(undefined, 0)).toBe("news");
    // Never seen: nothing stored is news too.
    const fresh = new KeptQueueRecord(controls, "r", silentLogger(), stop.signal);
    expect(fresh.heard(undefined, 0)).toBe("news");
    expect(asked).toEqual([]);
    stop.abort();
  });

  it("a write-back that fails is tried again, one at a time, with the value last seen", async () => {
    const { asked, state, controls } = noted();
    state.failing = true;
    const stop = new AbortController();
    const kept = new KeptQueueRecord(controls, "q", silentLogger(), stop.signal);
    kept.heard("one", 3);
    kept.heard(undefined, 0);
    // Heard again while one is under way: not a second write-back beside it.
    kept.heard(undefined, 0);
    await waitUntil(() => asked.length >= 2, { timeoutMs: 3000, message: "a second try" });
    expect({ inFlightMost: state.inFlightMost, asked: [...new Set(asked)] }).toEqual({
      inFlightMost: 1,
      asked: ["one"],
    });
    stop.abort();
  });

  it("a write-back refused (the user may not write the record) is said once, not tried again until heard gone again", async () => {
    vi.useFakeTimers();
    try {
      const asked: string[] = [];
      const controls = {
        restoreSettings: async (_queue: string, value: string) => {
          asked.push(value);
          return "refused" as const;
        },
      } as unknown as QueueControls;
      const log = capturedLog();
      const stop = new AbortController();
      const kept = new KeptQueueRecord(controls, "q", log.logger, stop.signal);
      kept.heard("one", 3);
      expect(kept.heard(undefined, 0)).toBe("vanished");
      // Past every pause of the retries (200 ms doubling to 5 s): none.
      await vi.advanceTimersByTimeAsync(30_000);
      const afterOne = asked.length;
      // Heard gone again (its watch placed again): one more try, not one more warning.
      kept.heard(undefined, 0);
      await vi.advanceTimersByTimeAsync(30_000);
      const warned = log.lines.filter((l) => l.level >= 40 && /may not write/.test(l.msg));
      expect({ afterOne, asked, warned: warned.length }).toEqual({
        afterOne: 1,
        asked: ["one", "one"],
        warned: 1,
      });
      stop.abort();
    } finally {
      vi.useRealTimers();
    }
  });
});
