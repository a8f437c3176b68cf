/**
 * A job cancelled while its worker stops. stop() waits for the handlers
 * running (up to `stopTimeoutMs`) and runs the tasks it pulled that are on
 * their last delivery; the cancel must reach them as it does a worker that
 * is not stopping: the handlers' signals abort at once, and a task waiting
 * for its slot does not start. Seen before the fix: a stopping worker
 * stopped hearing its jobs' records, so the handlers of a cancelled job ran
 * on until `stopTimeoutMs` and a waiting task of it started afterwards.
 *
 * The oracle is the handlers' own ledger (which task started, when its
 * signal fired) and the time stop() took, against a `stopTimeoutMs` far
 * longer than the test waits.
 */
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { Runtime } from "../../src/index.ts";
import { useRuntimeOn } from "../harness/runtime.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const stopTimeoutMs = 30_000;

describe.each(["memory", "nats"] as const)("a job cancelled while its worker stops (%s)", (kind) => {
  let rt: Runtime;
  useRuntimeOn(kind, { logger: pino({ level: process.env.LOG_LEVEL ?? "silent" }) }, async (started) => {
    rt = started;
    await rt.admin.provision(["heeds", "ignores"]);
  });

  it("aborts the signals of its running handlers, and stop() returns without waiting them out", async () => {
    const aborted = new Set<number>();
    let running = 0;
    const job = await rt.jobs.submit<number, number>({ queue: "heeds", tasks: [0, 1, 2] });
    const worker = rt.workers.start<number, number>({
      queue: "heeds",
      concurrency: 3,
      stopTimeoutMs,
      handler: async (task, ctx) => {
        running++;
        // Ends when its signal fires, or after the test's time.
        await new Promise<void>((resolve) => {
          ctx.signal.addEventListener("abort", () => resolve(), { once: true });
          setTimeout(resolve, stopTimeoutMs).unref();
        });
        if (ctx.signal.aborted) aborted.add(task.index);
        return task.index;
      },
    });
    await waitUntil(() => running === 3, { timeoutMs: 10_000, message: "3 handlers running" });
    const t0 = performance.now();
    const stopped = worker.stop();
    await delay(100);
    await job.cancel("cancelled by the test");
    await Promise.race([stopped, delay(5_000)]);
    const tookMs = performance.now() - t0;
    expect([...aborted].sort()).toEqual([0, 1, 2]);
    expect(tookMs).toBeLessThan(5_000);
    await stopped;
  }, 60_000);

  it("does not start a task of it that waits for a slot on its last delivery", async () => {
    const started: number[] = [];
    const job = await rt.jobs.submit<number, number>({ queue: "ignores", tasks: [0, 1, 2], maxDeliver: 1 });
    const worker = rt.workers.start<number, number>({
      queue: "ignores",
      concurrency: 1,
      stopTimeoutMs,
      // Ignores its signal: its slot is free at the cancel all the same (its answer is dropped).
      handler: async (task) => {
        started.push(task.index);
        await delay(1_500);
        return task.index;
      },
    });
    await waitUntil(() => started.length === 1, { timeoutMs: 10_000, message: "a handler running" });
    const stopped = worker.stop();
    await delay(100);
    await job.cancel("cancelled by the test");
    await stopped;
    // The tasks waiting would have started once the first handler ended, 1.5 s on.
    await delay(500);
    expect(started).toHaveLength(1);
    expect((await rt.jobs.get(job.id))?.snapshot().status).toBe("failed");
  }, 60_000);
});
