/**
 * Attack on the schedules' clocks (review of 812ed9f): a `lastTick` ahead of
 * its entry's stamp (written by a clock ahead: an older runtime, a hand) is
 * now "taken as absent". A runtime that starts then, on a `missed: "runOnce"`
 * schedule, anchors at `since` instead and counts the latest tick before its
 * start as missed: a tick another runtime fired already. Its job is found by
 * its key only while its record lives; once cleanup removed it (retention:
 * seven days by default, shorter than a monthly cron's period), the tick
 * fires a second time. Before the change the same `lastTick` skipped ticks;
 * now it fires one twice. (Taking it as its entry's stamp, the latest time
 * it can be borne out, would fire neither.)
 *
 * Oracle: the worker's ledger of handled tasks by job id (a tick's job id is
 * derived from its key, so one tick is one id), and the job records read raw.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scheduleOfKey } from "../../src/kernel/schedule-record.ts";
import {
  type ClockBackend,
  committedTicks,
  memoryClockBackend,
  natsClockBackend,
} from "../harness/clock-backends.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";

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

const period = 6000;
const tenMinutes = 600_000;

describe.each(backends)("a lastTick written ahead, a runOnce schedule, on $name", ({ make }) => {
  it("a runtime starting after the fired tick's record was cleaned up does not fire it again", async () => {
    const backend = make();
    try {
      const queue = "refire";
      const handled = new Map<string, number>();
      const handler = (task: { jobId: string }) => {
        handled.set(task.jobId, (handled.get(task.jobId) ?? 0) + 1);
        return null;
      };
      const a = await backend.runtime("right-a");
      a.workers.start({ queue, handler });
      await a.schedules.upsert({
        id: "refire",
        everyMs: period,
        missed: "runOnce",
        job: { queue, tasks: [1] },
      });
      // The first tick T fired, its job finished and T recorded, early enough in its period.
      let tick = 0;
      await waitUntil(
        async () => {
          const records = await backend.records();
          const done = records.filter((r) => r.queue === queue && r.finishedAt !== undefined);
          const schedule = await backend.schedule("refire");
          if (
            !schedule ||
            done.length !== 1 ||
            schedule.lastTick !== scheduleOfKey(done[0]!.idempotencyKey)?.tick
          )
            return false;
          tick = schedule.lastTick as number;
          return true;
        },
        { timeoutMs: period + 5000, intervalMs: 20, message: "the first tick fired, finished and recorded" },
      );
      expect(Date.now()).toBeLessThan(tick + period - 3000);
      // A writer ahead (an older runtime, ten minutes on) records a tick: ahead of its entry's stamp.
      await backend.writeLastTick("refire", Date.now() + tenMinutes);
      // Retention over: T's record goes (as a seven-day retention does to a monthly tick's).
      await a.admin.cleanup({ retentionMs: 1 });
      expect(committedTicks(await backend.records(), queue)).toEqual([]);
      // Another runtime starts (a deploy, a restart) before the next tick.
      const b = await backend.runtime("right-b");
      b.workers.start({ queue, handler });
      await delay(1500);
      expect(Date.now()).toBeLessThan(tick + period);
      expect({
        refired: committedTicks(await backend.records(), queue).map((t) => `${t === tick ? "T" : t}`),
        handledTwice: [...handled.values()].filter((n) => n > 1).length,
      }).toEqual({ refired: [], handledTwice: 0 });
    } finally {
      await backend.stop();
    }
  }, 30_000);
});
