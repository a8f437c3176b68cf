/**
 * A job that nothing answers stalls `stallAfterMs` after its last progress,
 * however its host's wall clock is set meanwhile. The oracle is the time the
 * test let pass (a manual clock's `advance`) with no task answered: no worker
 * runs. Its host's clock set back a minute (NTP stepping back a clock that
 * ran ahead) must not hold the stall back a minute.
 */
import { describe, expect, it } from "vitest";
import { createTestRuntime } from "../../src/api/runtime.ts";
import { ManualClock } from "../../src/kernel/clock.ts";

describe("the stall of a job nothing answers, its host's clock set back", () => {
  it("is seen stallAfterMs after its last progress, not a step later", async () => {
    const clock = new ManualClock(Date.now());
    const rt = await createTestRuntime({ clock, jobs: { leaseMs: 30_000 } });
    const job = await rt.jobs.submit({ queue: "idle", tasks: [1, 2], stallAfterMs: 20_000 });
    const settle = () => new Promise((resolve) => setTimeout(resolve, 5));
    for (let n = 0; n < 5; n++) await settle();
    expect(job.snapshot().status).toBe("running");
    clock.step(-60_000);
    // 25 s pass with nothing answered (no worker on the queue): past the stall at 20 s.
    let passedMs = 0;
    for (; passedMs < 25_000 && job.snapshot().status !== "stalled"; passedMs += 1000) {
      clock.advance(1000);
      await settle();
    }
    expect(job.snapshot().status, `after ${passedMs} ms with nothing answered`).toBe("stalled");
    await rt.stop();
  });
});
