import { describe, expect, it } from "vitest";
import { ConsumerLives, livesOn } from "../../src/adapters/nats/consumer-lives.ts";

/**
 * The oracle: the life of each delivery as the server made them, written
 * down here (which consumer made it), against the lives the loop tells
 * apart from what it met: a delivery's life is over exactly when a later
 * consumer of its name has been met.
 */
describe("ConsumerLives", () => {
  it("a round that meets a consumer created again, with fewer deliveries than seen, ends the life before", () => {
    const lives = new ConsumerLives();
    lives.met("2026-12-06T08:00:00Z", 0);
    const first = [lives.of(1), lives.of(2), lives.of(3)];
    // A plain restart, its deliveries kept: a single nats-server 2.9 reports another creation time.
    lives.met("2026-12-06T08:00:00.000001Z", 3);
    const more = lives.of(4);
    expect([...first, more].map((l) => l.over)).toEqual([false, false, false, false]);
    // Made again (its deliveries count from 1 again), before this loop had one of its deliveries:
    // other workers took the first ones, so the next one here does not show it.
    lives.met("2026-12-06T09:00:00Z", 2);
    expect([...first, more].map((l) => l.over)).toEqual([true, true, true, true]);
    const fresh = lives.of(5);
    expect(fresh.over).toBe(false);
    // The same consumer met again, even one that lost its last deliveries (a cluster's leader
    // elected behind): nothing ends.
    lives.met("2026-12-06T09:00:00Z", 5);
    lives.met("2026-12-06T09:00:00Z", 1);
    expect([fresh.over, lives.of(6).over]).toEqual([false, false]);
  });

  it("a delivery sequence that does not grow ends the life before, and the next round's consumer is that new one", () => {
    const lives = new ConsumerLives();
    lives.met("2026-12-06T08:00:00Z", 0);
    const old = [lives.of(3), lives.of(4)];
    // Made again while the round pulled on (nats.js pulls again after a reconnect).
    const fresh = [lives.of(1), lives.of(2)];
    expect(old.map((l) => l.over)).toEqual([true, true]);
    // The next round meets the consumer those came from: they stay live.
    lives.met("2026-12-06T09:00:00Z", 2);
    expect([...fresh, lives.of(5)].map((l) => l.over)).toEqual([false, false, false]);
    // A redelivery has a delivery sequence of its own, larger: no new life.
    expect(lives.of(6).over).toBe(false);
  });

  it("a delivery a drain caught is of the life now, its sequence not looked at: the iterator's lower ones after it end nothing", () => {
    const lives = new ConsumerLives();
    lives.met("2026-12-06T08:00:00Z", 0);
    const taken = lives.of(4);
    const caught = lives.caught(); // delivery 9, reached the drain first
    const buffered = [lives.of(5), lives.of(6)];
    expect([taken, caught, ...buffered].map((l) => l.over)).toEqual([false, false, false, false]);
    expect(new Set([taken, caught, ...buffered]).size).toBe(1);
  });

  it("a delivery with no sequence known is of the life now; end() ends it", () => {
    const lives = new ConsumerLives();
    const known = lives.of(7);
    const unknown = lives.of(undefined);
    expect(unknown).toBe(known);
    lives.end();
    expect([known.over, unknown.over]).toEqual([true, true]);
  });

  it("a put-back is wanted while its delivery's life lasts and its own test says so", () => {
    const life = { over: false };
    let jobRuns = true;
    const wanted = livesOn(life, () => jobRuns);
    expect([wanted(), livesOn(life)()]).toEqual([true, true]);
    jobRuns = false;
    expect(wanted()).toBe(false);
    jobRuns = true;
    life.over = true;
    expect([wanted(), livesOn(life)()]).toEqual([false, false]);
  });
});
