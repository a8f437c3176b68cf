/**
 * The HTTP leases' permits (`api/lease-limits.ts`) against a ledger of what
 * was done to each permit: a held concurrency permit is renewed while its
 * lease lasts (past the permit's own 5-s lease), moved by a heartbeat, given
 * back when answered or when its lease ends; what a pull did not use goes
 * back at once; a rate permit spent comes back 1 s later.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { toHttpError } from "../../src/adapters/http/http-app.ts";
import type { Permit, PermitKind, QueueControls } from "../../src/adapters/queue-controls.ts";
import { leaseLimits, queueSettingsOf } from "../../src/api/lease-limits.ts";
import { PermanentBrokerError, TransientBrokerError } from "../../src/kernel/errors.ts";
import { type Logger, silentLogger } from "../../src/kernel/logger.ts";
import { encodeQueueSettings, openQueue, type QueueSettings } from "../../src/kernel/queue-settings.ts";

interface Ledger {
  readonly kind: PermitKind;
  keeps: number;
  released?: number;
}

/** Lease notes as core NATS carries them: to whoever listens now, on any instance sharing the bus. */
const notesBus = (listeners = new Set<{ queue: string; onNote: (note: string) => void }>()) => ({
  noteLease: (queue: string, note: string) => {
    for (const l of listeners) if (l.queue === queue) l.onNote(note);
  },
  watchLeaseNotes: (queue: string, onNote: (note: string) => void, signal: AbortSignal) => {
    const listener = { queue, onNote };
    listeners.add(listener);
    signal.addEventListener("abort", () => listeners.delete(listener), { once: true });
  },
});

const fakeControls = (free: Record<PermitKind, number>, ledger: Ledger[]): QueueControls => {
  const permit = (kind: PermitKind): Permit => {
    const entry: Ledger = { kind, keeps: 0 };
    ledger.push(entry);
    return {
      keep: () => {
        entry.keeps++;
      },
      release: (delayMs = 0) => {
        entry.released = delayMs;
      },
    };
  };
  const take = (kind: PermitKind, max: number) => {
    const n = Math.min(max, free[kind]);
    free[kind] -= n;
    return Array.from({ length: n }, () => permit(kind));
  };
  return {
    takePermit: async (_q, kind) => take(kind, 1)[0],
    takeFreePermits: async (_q, kind, max) => take(kind, max),
    ...notesBus(),
  } as Partial<QueueControls> as QueueControls;
};

describe("HTTP lease limits", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const settings = (s: Partial<QueueSettings>) => async () => ({ ...openQueue("q"), ...s });

  it("an unlimited queue admits every slot and takes no permit", async () => {
    const ledger: Ledger[] = [];
    const limits = leaseLimits(
      fakeControls({ concurrency: 0, rate: 0 }, ledger),
      settings({}),
      silentLogger(),
    );
    expect((await limits.admit("q", 7)).slots).toBe(7);
    expect(ledger).toEqual([]);
  });

  it("a held permit is kept past 5 s while its lease lasts, moved by a heartbeat, given back at the answer", async () => {
    const ledger: Ledger[] = [];
    const limits = leaseLimits(
      fakeControls({ concurrency: 3, rate: 10 }, ledger),
      settings({ maxConcurrency: 3, ratePerSecond: 10 }),
      silentLogger(),
    );
    const admission = await limits.admit("q", 5);
    expect(admission.slots).toBe(3);
    admission.bind([{ ref: "r1", until: Date.now() + 8000 }]);
    const caps = ledger.filter((e) => e.kind === "concurrency");
    const rates = ledger.filter((e) => e.kind === "rate");
    // One of each used; the two others of each given back at once.
    expect(caps.map((e) => e.released)).toEqual([undefined, 0, 0]);
    expect(rates.map((e) => e.released)).toEqual([1000, 0, 0]);
    await vi.advanceTimersByTimeAsync(7000);
    expect(caps[0]?.keeps).toBeGreaterThanOrEqual(4);
    expect(caps[0]?.released).toBeUndefined();
    limits.extend("r1", Date.now() + 10_000);
    await vi.advanceTimersByTimeAsync(5000);
    expect(caps[0]?.released).toBeUndefined();
    limits.end("r1");
    expect(caps[0]?.released).toBe(0);
  });

  it("a lease that runs out gives its permit back by itself", async () => {
    const ledger: Ledger[] = [];
    const limits = leaseLimits(
      fakeControls({ concurrency: 1, rate: 0 }, ledger),
      settings({ maxConcurrency: 1 }),
      silentLogger(),
    );
    const admission = await limits.admit("q", 1);
    admission.bind([{ ref: "r1", until: Date.now() + 3000 }]);
    await vi.advanceTimersByTimeAsync(2000);
    expect(ledger[0]?.released).toBeUndefined();
    await vi.advanceTimersByTimeAsync(3000);
    expect(ledger[0]?.released).toBe(0);
    // No permit free: no slot, and nothing held.
    expect((await limits.admit("q", 1)).slots).toBe(0);
  });

  it("a heartbeat or an answer through another instance reaches the instance holding the permit", async () => {
    const ledger: Ledger[] = [];
    const listeners = new Set<{ queue: string; onNote: (note: string) => void }>();
    const bus = notesBus(listeners);
    const capped = settings({ maxConcurrency: 2 });
    const holder = leaseLimits(
      { ...fakeControls({ concurrency: 2, rate: 0 }, ledger), ...bus },
      capped,
      silentLogger(),
    );
    const other = leaseLimits(
      { ...fakeControls({ concurrency: 0, rate: 0 }, []), ...bus },
      capped,
      silentLogger(),
    );
    holder.admit("q", 2).then((a) =>
      a.bind([
        { ref: "r1", until: Date.now() + 3000 },
        { ref: "r2", until: Date.now() + 3000 },
      ]),
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(listeners.size).toBe(1);
    // r1's heartbeat through the other instance: kept past its first end; a note naming an earlier
    // end (notes come in any order) and an unreadable one change nothing.
    other.extend("r1", Date.now() + 10_000, "q");
    await vi.advanceTimersByTimeAsync(0);
    bus.noteLease("q", JSON.stringify({ ref: "r1", leftMs: 0 }));
    bus.noteLease("q", "{not json");
    bus.noteLease("q", JSON.stringify({ ref: "r1" }));
    // Out of bounds (past the longest lease a receipt carries): ignored, r2 ends at its own end.
    bus.noteLease("q", JSON.stringify({ ref: "r2", leftMs: 21 * 3600_000 }));
    bus.noteLease("q", JSON.stringify({ ref: "r2", leftMs: -1 }));
    await vi.advanceTimersByTimeAsync(5000);
    expect(ledger.map((e) => e.released)).toEqual([undefined, 0]);
    // r1's answer through the other instance: given back at once, not at its end 5 s on.
    other.end("r1", "q");
    await vi.advanceTimersByTimeAsync(0);
    expect(ledger.map((e) => e.released)).toEqual([0, 0]);
    // With no permit of the queue held any more, its notes are not listened to after the next round.
    await vi.advanceTimersByTimeAsync(2000);
    expect(listeners.size).toBe(0);
  });

  it("an instance holding no permit tells nothing of a queue without a concurrency cap", async () => {
    const told: string[] = [];
    const controls = {
      ...fakeControls({ concurrency: 0, rate: 0 }, []),
      noteLease: (_queue: string, note: string) => told.push(note),
    } as QueueControls;
    const limits = leaseLimits(controls, settings({ ratePerSecond: 5 }), silentLogger());
    limits.extend("r1", Date.now() + 1000, "q");
    limits.end("r1", "q");
    limits.end("r2");
    await vi.advanceTimersByTimeAsync(0);
    expect(told).toEqual([]);
  });

  it("an instance whose read of the settings fails tells its notes: the queue may have a cap", async () => {
    const told: string[] = [];
    const controls = {
      ...fakeControls({ concurrency: 0, rate: 0 }, []),
      noteLease: (_queue: string, note: string) => told.push(note),
    } as QueueControls;
    const failing = async () => {
      throw new TransientBrokerError({ message: "timeout", operation: "kv.get" });
    };
    const limits = leaseLimits(controls, failing, silentLogger());
    limits.end("r1", "q");
    await vi.advanceTimersByTimeAsync(0);
    expect(told.map((n) => JSON.parse(n))).toEqual([{ ref: "r1", ended: true }]);
  });
});

describe("the HTTP API's cache of queue settings", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  // A read that failed (a timeout) answered the queue open: an HTTP reserve of a paused or
  // capped queue then handed out tasks, and took no permit, until a read came back.
  it("a read that fails is the reserve's failure (a 503), not an open queue; it is not kept", async () => {
    let fail = true;
    const controls = {
      getSettings: async () => {
        if (fail) throw new TransientBrokerError({ message: "queue settings: timeout", operation: "kv.get" });
        return { value: encodeQueueSettings({ ...openQueue("q"), paused: true }), revision: 1 };
      },
    } as Partial<QueueControls> as QueueControls;
    const settingsOf = queueSettingsOf(controls, silentLogger());
    const failed = await settingsOf("q").catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(TransientBrokerError);
    expect(toHttpError(failed).status).toBe(503);
    fail = false;
    expect((await settingsOf("q")).paused).toBe(true);
  });

  // One that can never succeed (no right to read the bucket) is no reason to refuse every
  // reserve: the queue runs without its settings, as a native worker's does.
  it("a read that fails for good answers the queue open, and says so", async () => {
    const controls = {
      getSettings: async () => {
        throw new PermanentBrokerError({ message: "permissions violation", operation: "kv.get" });
      },
    } as Partial<QueueControls> as QueueControls;
    const warned: unknown[] = [];
    const log = Object.assign(Object.create(silentLogger()), {
      warn: (...args: unknown[]) => warned.push(args[0]),
    }) as Logger;
    expect(await queueSettingsOf(controls, log)("q")).toEqual(openQueue("q"));
    expect(warned).toMatchObject([{ queue: "q" }]);
  });

  it("reads a queue once per 250 ms, and keeps only the queues asked for within that", async () => {
    const reads: string[] = [];
    const controls = {
      getSettings: async (queue: string) => {
        reads.push(queue);
        return undefined;
      },
    } as Partial<QueueControls> as QueueControls;
    const settingsOf = queueSettingsOf(controls, silentLogger());
    await settingsOf("a");
    await settingsOf("a");
    expect(reads).toEqual(["a"]);
    // A `*` token may name any queue: 5,000 names asked for once each.
    for (let n = 0; n < 5000; n++) await settingsOf(`q${n}`);
    expect(reads).toHaveLength(5001);
    vi.advanceTimersByTime(300);
    await settingsOf("a");
    expect(reads).toHaveLength(5002);
    expect(settingsOf.cached()).toBe(1);
    // Only the run-out front goes: "a" (read 200 ms ago) stays beside "b"; 100 ms on, "a" goes.
    vi.advanceTimersByTime(200);
    await settingsOf("b");
    expect(settingsOf.cached()).toBe(2);
    vi.advanceTimersByTime(100);
    await settingsOf("c");
    expect(settingsOf.cached()).toBe(2);
    await settingsOf("b");
    expect(reads.slice(-2)).toEqual(["b", "c"]);
  });
});
