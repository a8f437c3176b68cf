/**
 * A concurrency permit's lease as its holder knows it (`PermitLease`): a
 * permit whose lease may have run out at the server (its keeps not had by
 * the server before its end: the client away, silently or not, or the event
 * loop held) is lost for good, and its holder's end must not give it back:
 * the server may have handed it to another task, and a nak would free that
 * task's. Checked against times worked out by hand (a keep the server had
 * in time moves the end to 4 s after the keep was sent).
 */
import { describe, expect, it } from "vitest";
import { PermitLease } from "../../src/adapters/nats/permit-pulls.ts";

const lease = () => {
  let now = 0;
  const l = new PermitLease(() => now);
  return {
    l,
    at: (ms: number) => {
      now = ms;
    },
    /** A keep sent at `sentAt`, its flush back at `heardAt`. */
    keep: (sentAt: number, heardAt = sentAt + 1) => {
      now = heardAt;
      l.heard(sentAt);
    },
  };
};

describe("a permit's lease, as its holder knows it", () => {
  it("kept every 1.6 s, each keep had at once: held for as long as it is kept", () => {
    const { l, at, keep } = lease();
    for (let t = 1600; t <= 20_000; t += 1600) keep(t);
    // The last keep was sent at 19,200.
    at(23_100);
    expect(l.held).toBe(true);
    at(23_200);
    expect(l.held).toBe(false);
  });

  it("keeps had by the server only after its end (the client away, silently or not): lost, though kept again once back", () => {
    const { l, keep } = lease();
    // Sent at 1.6 and 3.2 s, their flushes back once the connection is, at 5 s: past the end (4 s).
    keep(1600, 5000);
    keep(3200, 5000);
    keep(4800, 4801);
    keep(6400);
    expect(l.held).toBe(false);
  });

  it("the client away for less than its lease: held, from the keep sent before", () => {
    const { l, at, keep } = lease();
    keep(1600, 3900);
    at(5500);
    expect(l.held).toBe(true);
    at(5600);
    expect(l.held).toBe(false);
  });

  it("no keep sent for longer than its lease (the event loop held): lost", () => {
    const { l, keep } = lease();
    keep(4100);
    keep(5000);
    expect(l.held).toBe(false);
  });

  it("a queue's longer lease (permitLeaseMs 20 s): held 19 s past the keep the server had, no longer", () => {
    let now = 0;
    const l = new PermitLease(() => now, 20_000);
    now = 18_900;
    expect(l.held).toBe(true);
    now = 19_000;
    expect(l.held).toBe(false);
    const kept = new PermitLease(() => now, 20_000);
    now = 25_000;
    kept.heard(24_000);
    now = 42_900;
    expect(kept.held).toBe(true);
    now = 43_000;
    expect(kept.held).toBe(false);
  });
});
