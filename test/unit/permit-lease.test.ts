/**
 * A concurrency permit's lease as its holder knows it (`PermitLease`): a
 * permit whose lease may have run out at the server (the client away when
 * its keeps were due, or the event loop held past its end) is lost for
 * good, and its holder's end must not give it back: the server may have
 * handed it to another task, and a nak would free that task's. Checked
 * against times worked out by hand (the lease is known to last 4 s past a
 * keep sent on the connected client).
 */
import { describe, expect, it } from "vitest";
import { PermitLease } from "../../src/adapters/nats/permit-pulls.ts";

const lease = () => {
  let now = 0;
  let connected = true;
  const l = new PermitLease(
    () => connected,
    () => now,
  );
  return {
    l,
    at: (ms: number) => {
      now = ms;
    },
    away: (is: boolean) => {
      connected = !is;
    },
  };
};

describe("a permit's lease, as its holder knows it", () => {
  it("kept every 1.6 s on the connected client: held for as long as it is kept", () => {
    const { l, at } = lease();
    for (let t = 1600; t <= 20_000; t += 1600) {
      at(t);
      l.kept();
    }
    at(23_000);
    expect(l.held).toBe(true);
    // 4 s after its last keep: over.
    at(23_200);
    expect(l.held).toBe(false);
  });

  it("its keeps due while the client was away, past its end: lost, though kept again once back", () => {
    const { l, at, away } = lease();
    away(true);
    at(1600);
    l.kept();
    at(3200);
    l.kept();
    away(false);
    at(4800);
    l.kept();
    at(6400);
    l.kept();
    expect(l.held).toBe(false);
  });

  it("the client away for less than its lease: held again once kept", () => {
    const { l, at, away } = lease();
    away(true);
    at(1600);
    l.kept();
    away(false);
    at(3200);
    l.kept();
    at(6400);
    l.kept();
    expect(l.held).toBe(true);
  });

  it("no keep sent for longer than its lease (the event loop held): lost", () => {
    const { l, at } = lease();
    at(4100);
    l.kept();
    at(4200);
    l.kept();
    expect(l.held).toBe(false);
  });
});
