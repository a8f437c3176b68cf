/**
 * Attack on the schedules' clocks (review of 60b2016, the since-behind rule of
 * 923fb39) on NATS, every clock right: a runtime whose link to the server is
 * slow (its requests take 2.5 s to land: a congested or distant link, a
 * server slow to store) upserts a new schedule. Its `since` and `updatedAt`
 * are its time `at`, taken after its read answered; the write lands 2.5 s
 * later and is stamped then. A since equal to its updatedAt more than 1 s
 * behind its stamp is taken as "a clock behind's" and replaced by the stamp:
 * the ticks between `at` and the stamp are never fired by the scheduler that
 * ran all along, though the upsert answered the first of them as `nextTick`.
 *
 * Oracle: the job records read raw, each job's tick from its idempotency key;
 * the upsert's own `nextTick`; real time.
 */
import { describe, expect, it } from "vitest";
import { committedTicks, natsClockBackend } from "../harness/clock-backends.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { holdingProxy } from "../harness/tcp-proxy.ts";
import { waitUntil } from "../harness/wait.ts";

const served = useServerConnection();

const period = 1000;
const slowMs = 2500;

describe("a runtime on a slow link upserts a schedule, every clock right, on nats", () => {
  it("every tick from the upsert's nextTick on fires once, on time ± a pass", async () => {
    // Once armed, the first publish to the schedules bucket (the upsert's write, its read
    // answered) and every byte after it are held `slowMs`, in order: the write lands late.
    let armed = false;
    const proxy = await holdingProxy(served.server.url, "client", (text) => {
      if (!armed || !/^H?PUB \$KV\.[^ ]*_schedules\.slow /m.test(text)) return 0;
      armed = false;
      return slowMs;
    });
    const backend = natsClockBackend(served.server, served.nc);
    try {
      const queue = "slow";
      // A cluster already running: the right runtime's scheduler passes (each pass a read of the
      // schedules' bucket, heard on the server's API) before the slow runtime, with no scheduler
      // of its own, starts and upserts; two passes, as a scheduler that ran a while.
      const schedulesReads: string[] = [];
      const heard = served.nc.subscribe("$JS.API.>", {
        callback: (_e, m) => {
          if (m.subject.includes("_schedules")) schedulesReads.push(m.subject);
        },
      });
      await served.nc.flush();
      await backend.runtime("right");
      await waitUntil(() => schedulesReads.length >= 2, {
        timeoutMs: 10_000,
        message: () => `the right runtime's scheduler to pass twice (heard ${schedulesReads.join(", ")})`,
      });
      heard.unsubscribe();
      const slow = await backend.runtime("slow", { servers: proxy.url, jobs: { scheduler: false } });
      armed = true;
      const info = await slow.schedules.upsert({ id: "slow", everyMs: period, job: { queue, tasks: [1] } });
      armed = false;
      const answered = Date.now();
      const promised = (info as { nextTick?: number }).nextTick!;
      // Three periods past the promised tick fired: every tick up to it is due by then.
      const end = promised + 3 * period;
      await waitUntil(async () => committedTicks(await backend.records(), queue).some((t) => t >= end), {
        timeoutMs: 15_000,
        message: "the tick three periods past the promised one to fire",
      });
      const ticks = committedTicks(await backend.records(), queue);
      const expected: number[] = [];
      for (let t = promised; t <= end; t += period) expected.push(t);
      const lost = expected
        .filter((t) => !ticks.includes(t))
        .map((t) => `${t - answered} ms from the answer`);
      const twice = ticks.filter((t, i) => ticks.indexOf(t) !== i);
      expect({ lost, twice }).toEqual({ lost: [], twice: [] });
    } finally {
      await backend.stop();
      await proxy.close();
    }
  }, 30_000);
});
