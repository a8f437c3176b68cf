/**
 * A queue's permits' lease in its settings record (`permitLeaseMs`): how a
 * change is applied, and how a stored one is read, against records written
 * out by hand.
 */
import { describe, expect, it } from "vitest";
import {
  decodeQueueSettings,
  encodeQueueSettings,
  openQueue,
  permitLeaseOf,
  withLimits,
} from "../../src/kernel/queue-settings.ts";

const stored = (fields: object) =>
  JSON.stringify({ v: 1, paused: true, maxConcurrency: 2, updatedAt: 5, ...fields });

describe("permitLeaseMs in a queue's settings", () => {
  it("a stored lease out of this version's range reads as the default, the pause and the limits kept", () => {
    for (const lease of [7_200_000, 1000, "60000", 6000.5, null]) {
      const { settings, readable } = decodeQueueSettings("q", stored({ permitLeaseMs: lease }));
      expect(readable).toBe(true);
      expect(settings).toEqual({ queue: "q", paused: true, maxConcurrency: 2, updatedAt: 5 });
      expect(permitLeaseOf(settings)).toBe(5000);
    }
    expect(decodeQueueSettings("q", stored({ permitLeaseMs: 60_000 })).settings.permitLeaseMs).toBe(60_000);
  });

  it("set, kept when left out, lifted by null; a change gives the target pools a new round", () => {
    const base = withLimits(openQueue("q"), { perTarget: { maxConcurrency: 1 } }, 1, "r1");
    const leased = withLimits(base, { permitLeaseMs: 30_000 }, 2, "r2");
    expect(leased).toMatchObject({ permitLeaseMs: 30_000, perTarget: { maxConcurrency: 1, round: "r2" } });
    const kept = withLimits(leased, { maxConcurrency: 3 }, 3, "r3");
    expect(kept).toMatchObject({ permitLeaseMs: 30_000, perTarget: { round: "r2" } });
    const lifted = withLimits(kept, { permitLeaseMs: null }, 4, "r4");
    expect(lifted.permitLeaseMs).toBeUndefined();
    expect(lifted.perTarget?.round).toBe("r4");
    // Lifting a lease never set changes nothing of the pools.
    expect(withLimits(base, { permitLeaseMs: null }, 5, "r5").perTarget?.round).toBe("r1");
    expect(JSON.parse(encodeQueueSettings(leased))).toMatchObject({ permitLeaseMs: 30_000 });
  });
});
