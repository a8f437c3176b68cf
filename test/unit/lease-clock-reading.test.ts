/**
 * When a reading of the server's clock is read again: a slow one (its
 * answer took long) is not kept for its 5 minutes where the caller asks for a
 * bound (`maxRoundTripMs`: the HTTP API, whose receipts err early by the
 * reading's round trip): over a second old, it is read again; a fast one, or
 * a caller with no bound, keeps it. Nor one taken before the client
 * reconnected (maybe to another node).
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import { LeaseClock } from "../../src/adapters/nats/lease-clock.ts";
import type { ServerTime } from "../../src/kernel/clock.ts";

const reading = (ageMs: number, roundTripMs: number): ServerTime => ({
  at: Date.now() - ageMs,
  seenAt: performance.now() - ageMs,
  roundTripMs,
});

it("a reading slower than the bound is dropped for the bounded caller once a second old; kept otherwise", async () => {
  const clock = new LeaseClock(
    async () => reading(0, 5),
    () => undefined,
  );
  const kept = (seen: ServerTime, maxRoundTripMs?: number) => {
    clock.take(seen);
    return clock.serverTime(maxRoundTripMs) !== undefined;
  };
  expect({
    slowOld: kept(reading(2000, 4000), 100),
    slowOldUnbounded: kept(reading(2000, 4000)),
    slowFresh: kept(reading(0, 4000), 100),
    fastOld: kept(reading(2000, 50), 100),
  }).toEqual({ slowOld: false, slowOldUnbounded: true, slowFresh: true, fastOld: true });
  // Read again: the fresh reading is kept.
  clock.take(reading(2000, 4000));
  await clock.readOnce({} as NatsConnection);
  expect(clock.serverTime(100)?.roundTripMs).toBe(5);
});

it("a reading is dropped once the client reconnected (a new INFO: maybe another node), and read again", async () => {
  let nc = { info: { server_id: "n1" } } as unknown as NatsConnection;
  const clock = new LeaseClock(
    async () => reading(0, 5),
    () => nc,
  );
  clock.take(reading(10, 5));
  const before = clock.serverTime(100) !== undefined;
  nc = { info: { server_id: "n2" } } as unknown as NatsConnection;
  const after = clock.serverTime(100) !== undefined;
  await clock.readOnce(nc);
  expect({ before, after, readAgain: clock.serverTime(100) !== undefined }).toEqual({
    before: true,
    after: false,
    readAgain: true,
  });
});
