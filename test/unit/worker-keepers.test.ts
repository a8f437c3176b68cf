/**
 * A worker keeps the leases of a job's running tasks on one timer per job
 * (`RunningTasks`). Quick handlers each end before the next task starts, so
 * a keeper made when a task starts and cleared when none runs was a timer
 * made and cleared per task. It is kept while the job's pull loop runs, and
 * cleared once the loop has ended and nothing runs: none is left per job;
 * a tick that finds nothing to keep clears it too (a live job idle here).
 * Oracle: the platform's own `setInterval` and `clearInterval`, the calls
 * made from running-tasks.ts counted by their stack.
 */
import { afterEach, describe, expect, it } from "vitest";
import { createTestRuntime } from "../../src/testing.ts";
import { waitUntil } from "../harness/wait.ts";

const platformSet = globalThis.setInterval;
const platformClear = globalThis.clearInterval;
afterEach(() => {
  globalThis.setInterval = platformSet;
  globalThis.clearInterval = platformClear;
});

/** The keepers running-tasks.ts makes, alive until cleared; how many it made. */
const spyKeepers = () => {
  const spied = { alive: new Set<unknown>(), made: 0 };
  globalThis.setInterval = ((...args: Parameters<typeof setInterval>) => {
    const timer = platformSet(...args);
    if (/running-tasks\.ts/.test(new Error().stack ?? "")) {
      spied.made++;
      spied.alive.add(timer);
    }
    return timer;
  }) as typeof setInterval;
  globalThis.clearInterval = ((timer: Parameters<typeof clearInterval>[0]) => {
    spied.alive.delete(timer);
    platformClear(timer);
  }) as typeof clearInterval;
  return spied;
};

describe("a worker's lease keepers", () => {
  it("one per job while its tasks run one after another, none left once its loop ended", async () => {
    const rt = await createTestRuntime();
    const keepers = spyKeepers();
    // One slot: each task ends before the next starts, none running in between.
    const worker = rt.workers.start<number, number>({
      queue: "q",
      concurrency: 1,
      handler: (t) => t.payload,
    });
    const jobs = 5;
    const tasks = 20;
    for (let n = 0; n < jobs; n++)
      await (await rt.jobs.submit({ queue: "q", tasks: Array.from({ length: tasks }, (_, i) => i) })).done();
    await waitUntil(() => keepers.alive.size === 0, {
      timeoutMs: 5000,
      message: "every job's keeper cleared",
    });
    expect(keepers.made).toBeGreaterThan(0);
    expect(keepers.made).toBeLessThanOrEqual(jobs);
    await worker.stop();
    await rt.stop();
  });

  it("none held for a live job with nothing running or waiting here (its tasks' retries not due yet)", async () => {
    const rt = await createTestRuntime();
    const keepers = spyKeepers();
    const attempts: number[] = [];
    const worker = rt.workers.start<number, number>({
      queue: "q",
      concurrency: 4,
      handler: (t) => {
        attempts.push(t.attempt);
        if (t.attempt === 1) throw new Error("once");
        return t.payload;
      },
    });
    // Every task fails once and is retried 5 s on: meanwhile the job is live, its loop pulls,
    // and nothing of it runs or waits at this worker. Its keeper ticks every 100 ms (ack wait 300).
    const job = await rt.jobs.submit<number, number>({
      queue: "q",
      tasks: Array.from({ length: 10 }, (_, i) => i),
      ackWaitMs: 300,
      backoff: [5000],
    });
    await waitUntil(() => attempts.length === 10, { timeoutMs: 5000, message: "every first attempt" });
    expect(keepers.made).toBeGreaterThan(0);
    await waitUntil(() => keepers.alive.size === 0, {
      timeoutMs: 4000,
      message: "the idle job's keeper cleared",
    });
    // Cleared before the retries: not by the job's end.
    expect(attempts.filter((a) => a > 1)).toEqual([]);
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 10 });
    await worker.stop();
    await rt.stop();
  });

  it("none left by a worker stopped while a job's tasks run, nor by lane jobs", async () => {
    const rt = await createTestRuntime();
    const keepers = spyKeepers();
    let started = 0;
    const worker = rt.workers.start<number, number>({
      queue: "q",
      concurrency: 2,
      handler: async (t) => {
        started++;
        await new Promise((resolve) => setTimeout(resolve, 20));
        return t.payload;
      },
    });
    // Lane jobs (one task each) first, then a job of its own loop stopped midway.
    for (let n = 0; n < 5; n++) await (await rt.jobs.submit({ queue: "q", tasks: [n] })).done();
    await rt.jobs.submit({ queue: "q", tasks: Array.from({ length: 50 }, (_, i) => i) });
    await waitUntil(() => started >= 8, { timeoutMs: 5000, message: "the big job's tasks running" });
    expect(keepers.alive.size).toBeGreaterThan(0);
    await worker.stop();
    await waitUntil(() => keepers.alive.size === 0, {
      timeoutMs: 5000,
      message: "every keeper cleared after stop",
    });
    await rt.stop();
  });
});
