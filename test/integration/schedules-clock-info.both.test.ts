import { describe, expect, it } from "vitest";
import { clockBackends, offsetBy } from "../harness/clock-backends.ts";
import { delay } from "../harness/wait.ts";

const backends = clockBackends();

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
