/**
 * Attack on the schedules' clocks (review of 812ed9f), NATS: the server's
 * time is read by a listing and carried on by the monotonic clock
 * (`performance.now()`), which stands still while the host sleeps (a
 * laptop's lid, a VM paused). The NATS store checks the reading only when the
 * scheduler lists (its wall and monotonic ages differ: listed again); every
 * other use of the scheduler's time takes the reading as it is. Just after
 * the host wakes, before the scheduler's next listing, the reading is the
 * sleep's length behind: a runtime whose clock is right counts itself that
 * much ahead, and `rt.schedules.upsert` stamps the new schedule's `since`
 * that far back. Nothing checks a `since` behind its entry's stamp: the
 * ticks before the schedule was stored fire (every runtime's, from its own
 * start on, 20 at most).
 *
 * The sleep is simulated by the monotonic clock set back by its length (the
 * wall clock, like the server's, cannot be moved on): the same gap between
 * the two. Oracle: the real time read before the upsert, against the
 * schedule's record read raw (its `since`) and the job records read raw
 * (each tick from its idempotency key).
 */
import { Kvm } from "@nats-io/kv";
import { afterEach, expect, it, vi } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { committedTicks } from "../harness/clock-backends.ts";
import { rawJobRecords } from "../harness/raw-job-records.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { delay } from "../harness/wait.ts";

const served = useServerConnection();
afterEach(() => {
  vi.restoreAllMocks();
});

const slept = 60_000;

it("a host that slept a minute, an upsert as it wakes: since is the upsert's time, no tick from before it fires", async () => {
  const rt = await createRuntime({
    servers: served.server.url,
    prefix: "resume",
    name: "right",
    logger: silentLogger(),
    jobs: { cleanupIntervalMs: 0, reapIntervalMs: 0 },
  });
  try {
    // A schedule already there: the scheduler's listings read the server's time.
    await rt.schedules.upsert({ id: "hourly", cron: "0 * * * *", job: { queue: "hourly", tasks: [1] } });
    await delay(2500);
    // The host slept a minute: its monotonic clock is a minute behind its wall clock from now on.
    const monotonic = performance.now.bind(performance);
    vi.spyOn(performance, "now").mockImplementation(() => monotonic() - slept);
    const before = Date.now();
    await rt.schedules.upsert({ id: "woke", everyMs: 300, job: { queue: "woke", tasks: [1] } });
    await delay(2000);
    const entry = (await (await new Kvm(served.nc).open("resume_schedules")).get("woke"))!;
    const sinceBeforeTheUpsert = before - entry.json<{ since: number }>().since;
    const ticks = committedTicks(await rawJobRecords(served.nc, "resume_jobs"), "woke");
    expect(ticks.length).toBeGreaterThan(0);
    expect({
      sinceBeforeTheUpsert: sinceBeforeTheUpsert > 1000 ? `${sinceBeforeTheUpsert} ms` : "no",
      beforeStored: ticks.filter((t) => t <= before).map((t) => `-${before - t} ms`),
    }).toEqual({ sinceBeforeTheUpsert: "no", beforeStored: [] });
  } finally {
    await rt.stop();
  }
}, 30_000);
