import { describe, expect, it } from "vitest";
import { ConsumerLives } from "../../src/adapters/nats/consumer-lives.ts";

/**
 * The oracle: the life of each delivery as the server made them, written
 * down here (which consumer made it), against the lives the loop tells
 * apart from what it met: a delivery's life is over exactly when a later
 * consumer of its name has been met.
 */
describe("ConsumerLives", () => {
  it("a round that meets the consumer created again ends the life before; the same consumer met again ends nothing", () => {
    const lives = new ConsumerLives();
    lives.met("2026-12-06T08:00:00Z");
    const first = [lives.of(1), lives.of(2)];
    lives.met("2026-12-06T08:00:00Z"); // a round after a reconnect, the same consumer
    const more = lives.of(3);
    expect([...first, more].map((l) => l.over)).toEqual([false, false, false]);
    // Made again: its deliveries count from 1 again, and other workers took the first ones.
    lives.met("2026-12-06T09:00:00Z");
    const fresh = lives.of(9);
    expect([...first, more].map((l) => l.over)).toEqual([true, true, true]);
    expect(fresh.over).toBe(false);
  });

  it("a delivery sequence that does not grow ends the life before, and the next round's consumer is that new one", () => {
    const lives = new ConsumerLives();
    lives.met("2026-12-06T08:00:00Z");
    const old = [lives.of(3), lives.of(4)];
    // Made again while the round pulled on (nats.js pulls again after a reconnect).
    const fresh = [lives.of(1), lives.of(2)];
    expect(old.map((l) => l.over)).toEqual([true, true]);
    // The next round meets the consumer those came from: they stay live.
    lives.met("2026-12-06T09:00:00Z");
    expect([...fresh, lives.of(5)].map((l) => l.over)).toEqual([false, false, false]);
    // A redelivery has a delivery sequence of its own, larger: no new life.
    expect(lives.of(6).over).toBe(false);
  });

  it("a delivery with no sequence known is of the life now; end() ends it", () => {
    const lives = new ConsumerLives();
    const known = lives.of(7);
    const unknown = lives.of(undefined);
    expect(unknown).toBe(known);
    lives.end();
    expect([known.over, unknown.over]).toEqual([true, true]);
  });
});
