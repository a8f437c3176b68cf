/**
 * Priorities (issue #19, item 3): a priority-10 job of one task submitted
 * behind a priority-0 backlog on the same queue, with its worker busy
 * (concurrency 8, ~1 ms tasks), timed from `submit()` to its task's start in
 * the handler (one clock: the submitter and the worker are runtimes of one
 * process, on one prefix). The same for priority-0 jobs of one task, as a
 * reference: with only the backlog's loop ahead, round robin alone also gives
 * a new job the next slot, so the two differ only by noise here. The
 * backlog's tasks left when the last job started are the oracle that none
 * waited for it. Target: p50 and max ≤ 100 ms.
 */
import { randomUUID } from "node:crypto";
import { createRuntime, type Runtime } from "../src/index.ts";
import { silentLogger } from "../src/kernel/logger.ts";
import { median, round } from "./lib/stats.ts";

export interface PriorityShape {
  readonly backlogTasks: number;
  readonly jobs: number;
  readonly concurrency: number;
}

interface Latencies {
  /** submit() → the task's handler started, ms. */
  readonly p50Ms: number;
  readonly maxMs: number;
  /** submit() → submit() resolved, ms: the part the worker does not decide. */
  readonly submitP50Ms: number;
}

export interface PriorityResult {
  readonly shape: PriorityShape;
  readonly priority10: Latencies;
  readonly priority0: Latencies;
  /** The backlog's tasks not yet answered when the last measured job started (> 0: none waited for it). */
  readonly backlogLeftAtLast: number;
  /** Backlog tasks answered per second while the jobs came. */
  readonly backlogTasksPerSecond: number;
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const latencies = (startMs: number[], submitMs: number[]): Latencies => ({
  p50Ms: round(median(startMs), 1),
  maxMs: round(Math.max(...startMs), 1),
  submitP50Ms: round(median(submitMs), 1),
});

export async function measurePriority(
  url: string,
  shape: PriorityShape = { backlogTasks: 100_000, jobs: 10, concurrency: 8 },
): Promise<PriorityResult> {
  const prefix = `prio${randomUUID().slice(0, 6)}`;
  const open = (name: string) => createRuntime({ servers: url, prefix, name, logger: silentLogger() });
  const runtimes: Runtime[] = [];
  try {
    const worker = await open("bench-prio-worker");
    runtimes.push(worker);
    const submitter = await open("bench-prio-submitter");
    runtimes.push(submitter);
    const queue = "prio";
    await submitter.admin.provision([queue]);
    /** When each measured job's task started (performance.now()), by its tag. */
    const startedAt = new Map<string, number>();
    worker.workers.start<number | string, null>({
      queue,
      concurrency: shape.concurrency,
      handler: async (task) => {
        if (typeof task.payload === "string") {
          startedAt.set(task.payload, performance.now());
          return null;
        }
        await pause(1);
        return null;
      },
    });
    // The workers' record watch starts before the backlog: it is not a late learner.
    await pause(200);
    const backlog = await submitter.jobs.submit({
      queue,
      tasks: Array.from({ length: shape.backlogTasks }, (_, i) => i),
    });
    // Busy first: the backlog's loop holds its prefetched tasks and waits for slots.
    while (backlog.snapshot().done < 2000) await pause(20);
    const doneBefore = backlog.snapshot().done;
    const since = performance.now();
    const run = async (priority: number) => {
      const startMs: number[] = [];
      const submitMs: number[] = [];
      for (let k = 0; k < shape.jobs; k++) {
        const tag = `p${priority}.${k}`;
        const t0 = performance.now();
        const job = await submitter.jobs.submit({ queue, tasks: [tag], priority });
        submitMs.push(performance.now() - t0);
        const deadline = t0 + 10_000;
        while (!startedAt.has(tag) && performance.now() < deadline) await pause(1);
        const at = startedAt.get(tag);
        if (at === undefined)
          throw new Error(`job ${job.id} (priority ${priority}) did not start within 10 s`);
        startMs.push(at - t0);
        await job.done();
        await pause(100);
      }
      return latencies(startMs, submitMs);
    };
    const priority10 = await run(10);
    const priority0 = await run(0);
    const s = backlog.snapshot();
    const backlogLeftAtLast = s.total - s.done - s.failed - s.dead;
    const backlogTasksPerSecond = round(((s.done - doneBefore) * 1000) / (performance.now() - since), 0);
    if (backlogLeftAtLast === 0)
      throw new Error("the backlog ran out before the last job: the figures measure no backlog");
    await backlog.cancel("bench over");
    return { shape, priority10, priority0, backlogLeftAtLast, backlogTasksPerSecond };
  } finally {
    for (const rt of runtimes.reverse()) await rt.stop();
  }
}
