/**
 * A stalled job taken over by a runtime whose clock runs a minute ahead of
 * its stalled supervisor's, on both brokers. Its stalled timeout (20 s)
 * counts from the stall, which its record's last write says by the writer's
 * clock (`updatedAt`); read by the taker's clock a minute ahead, the stall
 * was already a minute old, and the taker failed the job "stalled too long"
 * at its first tick. The stall is now counted from the server's stamp of
 * that write, on the taker's clock. Oracle: the job's end once a worker
 * answers its task after the takeover.
 */
import { describe, expect, it } from "vitest";
import { clockBackends, offsetBy, submitStalled, untilLeaseHeldBy } from "../harness/clock-backends.ts";
import { delay } from "../harness/wait.ts";

const leaseMs = 2000;

describe.each(clockBackends())(
  "a stalled job taken over by a runtime whose clock runs ahead ($name)",
  ({ make }) => {
    it("stays stalled until its timeout by the server's time, and succeeds once answered", async () => {
      const backend = make();
      try {
        const queue = "q";
        // No worker yet: the job stalls half a second on.
        const first = await backend.runtime("first", { jobs: { leaseMs, takeOver: false } });
        const job = await submitStalled(backend, first, queue);
        await backend.runtime("ahead", { clock: offsetBy(60_000), jobs: { leaseMs } });
        await first.stop(); // its lease given back: the runtime ahead takes the job over
        await untilLeaseHeldBy(backend, job.id, "ahead");
        // Its taker ticks every 125 ms (a quarter of stallAfterMs) once it has read the job's
        // results (none here): two seconds are sixteen ticks, each of which failed it before.
        await delay(2000);
        expect((await backend.records()).find((r) => r.id === job.id)?.status).toBe("stalled");
        const w = await backend.runtime("w", { roles: ["worker", "submitter"] });
        w.workers.start({ queue, handler: () => 1 });
        const watched = await w.jobs.get(job.id);
        expect(await watched?.done()).toMatchObject({ status: "succeeded", done: 1, failed: 0 });
      } finally {
        await backend.stop();
      }
    }, 60_000);
  },
);
