/**
 * Attack on the schedules' clocks (review of 812ed9f): a runtime whose clock
 * is ten minutes BEHIND stores a new schedule (`rt.schedules.upsert`). The
 * change leaves a clock behind as it is ("its ticks fire late there, and on
 * time in the runtimes whose clocks are right"), but the upsert stamps
 * `since` by it: ten minutes before the schedule existed, and no check looks
 * at a `since` behind its entry's stamp. The runtime with a right clock then
 * fires the ticks of those ten minutes at once (the latest 20 a pass hands
 * out, from its own start on), and the runtime behind (its scheduler on)
 * fires them too until a `lastTick` is recorded: jobs of ticks that fell
 * before the schedule was stored (for a cron, e.g. a 03:00 tick stored at
 * 03:05 by a clock ten minutes behind, fired at once).
 *
 * Oracle: the job records read raw, each job's tick from its idempotency
 * key, against the real time read before the upsert.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ClockBackend,
  committedTicks,
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

const period = 300;
const tenMinutes = 600_000;

describe.each(backends)("a runtime's clock ten minutes behind stores a schedule, on $name", ({ make }) => {
  it.each([true, false])(
    "(its scheduler on: %s) no job carries a tick from before the schedule was stored",
    async (scheduler) => {
      const backend = make();
      try {
        const queue = "behind";
        await backend.runtime("right");
        const behind = await backend.runtime("behind", {
          clock: offsetBy(-tenMinutes),
          jobs: { scheduler },
        });
        // A cluster already running: the right runtime's scheduler started a while before the upsert.
        await delay(2000);
        const before = Date.now();
        await behind.schedules.upsert({ id: "behind", everyMs: period, job: { queue, tasks: [1] } });
        await delay(2500);
        const ticks = committedTicks(await backend.records(), queue);
        const beforeStored = ticks.filter((t) => t <= before).map((t) => `-${before - t} ms`);
        expect(ticks.length).toBeGreaterThan(0);
        expect(beforeStored).toEqual([]);
      } finally {
        await backend.stop();
      }
    },
    30_000,
  );
});
