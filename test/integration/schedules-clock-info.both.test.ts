/**
 * Attack on the schedules' clocks (review of 812ed9f): what `rt.schedules`
 * shows. The scheduler now fires by the server's time when its runtime's
 * clock is ahead, and does not take a `lastTick` ahead of its entry's stamp
 * as fired; `upsert`, `get` and `list` still compute `nextTick` by the
 * runtime's own clock and the stored `lastTick` as it is. A runtime ten
 * minutes ahead says its schedule's next tick is ten minutes on while the
 * tick fires within a period; after a `lastTick` written ahead, every
 * runtime (clocks right) says the next tick is ten minutes on, and it fires
 * now.
 *
 * Oracle: the real clock and the rule's period: a next tick is within a
 * period of the real time it was asked at.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ClockBackend,
  memoryClockBackend,
  natsClockBackend,
  offsetBy,
} from "../harness/clock-backends.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay } from "../harness/wait.ts";

let nats: NatsServerHandle;
let nc: NatsConnection;
beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});
afterAll(async () => {
  await nc?.close();
  await nats?.dispose();
});

const backends: Array<{ name: string; make(): ClockBackend }> = [
  { name: "memory", make: memoryClockBackend },
  { name: "nats", make: () => natsClockBackend(nats, nc) },
];

const period = 1000;
const tenMinutes = 600_000;

/** How far past a period from `at` the next tick shown is (0: within it). */
const pastPeriod = (nextTick: number | undefined, at: number) =>
  nextTick === undefined ? Number.NaN : Math.max(0, nextTick - (at + period));

describe.each(backends)("the next tick rt.schedules shows, on $name", ({ make }) => {
  it("by a runtime ten minutes ahead, and by one right after a lastTick written ahead: within a period", async () => {
    const backend = make();
    try {
      const queue = "shown";
      const right = await backend.runtime("right");
      const ahead = await backend.runtime("ahead", { clock: offsetBy(tenMinutes) });
      await delay(1500);
      const upsertedAt = Date.now();
      const upserted = await ahead.schedules.upsert({
        id: "shown",
        everyMs: period,
        job: { queue, tasks: [1] },
      });
      await delay(1500);
      const askedAt = Date.now();
      const byAhead = await ahead.schedules.get("shown");
      const listedByAhead = (await ahead.schedules.list())[0];
      for (let attempt = 1; ; attempt++)
        try {
          await backend.writeLastTick("shown", Date.now() + tenMinutes);
          break;
        } catch (error) {
          if (attempt >= 5) throw error;
        }
      const rightAskedAt = Date.now();
      const byRight = await right.schedules.get("shown");
      expect({
        upsert: pastPeriod(upserted.nextTick, upsertedAt),
        getByAhead: pastPeriod(byAhead?.nextTick, askedAt),
        listByAhead: pastPeriod(listedByAhead?.nextTick, askedAt),
        getByRightAfterLastTickAhead: pastPeriod(byRight?.nextTick, rightAskedAt),
      }).toEqual({ upsert: 0, getByAhead: 0, listByAhead: 0, getByRightAfterLastTickAhead: 0 });
    } finally {
      await backend.stop();
    }
  }, 30_000);
});
