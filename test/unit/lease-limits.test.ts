/**
 * The HTTP leases' permits (`api/lease-limits.ts`) against a ledger of what
 * was done to each permit: a held concurrency permit is renewed while its
 * lease lasts (past the permit's own 5-s lease), moved by a heartbeat, given
 * back when answered or when its lease ends; what a pull did not use goes
 * back at once; a rate permit spent comes back 1 s later.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Permit, PermitKind, QueueControls } from "../../src/adapters/queue-controls.ts";
import { leaseLimits, queueSettingsOf } from "../../src/api/lease-limits.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { openQueue, type QueueSettings } from "../../src/kernel/queue-settings.ts";

interface Ledger {
  readonly kind: PermitKind;
  keeps: number;
  released?: number;
}

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
});

describe("the HTTP API's cache of queue settings", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("reads a queue once per 250 ms, and keeps only the queues asked for within that", async () => {
    const reads: string[] = [];
    const controls = {
      getSettings: async (queue: string) => {
        reads.push(queue);
        return undefined;
      },
    } as Partial<QueueControls> as QueueControls;
    const settingsOf = queueSettingsOf(controls);
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
