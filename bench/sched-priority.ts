/**
 * Priorities (issue #19, item 3): jobs of one task submitted behind a
 * priority-0 backlog on the same queue, with its worker busy, each timed from
 * `submit()` to its task's start in the handler (one clock: the submitter and
 * the worker are runtimes of one process, on one prefix); priority-10 jobs,
 * then priority-0 ones as the reference. The backlog's tasks left when the
 * last job started are the oracle that none waited for it.
 *
 * - `behindBacklog`, the target (p50 and max ≤ 100 ms): one job of
 *   100,000 tasks, concurrency 8, ~1 ms tasks. With only that job's loop
 *   ahead, round robin alone also gives a new job the next slot: the two
 *   figures differ by noise, and show a new job is not queued behind the
 *   backlog's prefetched tasks.
 * - `behindManyJobs`: 32 jobs of 1,000 tasks of ~10 ms, concurrency 8. Round
 *   robin puts a new priority-0 job behind one task of each (~32 × 10 ms / 8);
 *   priority 10 takes the next slot freed (at most one in eight goes to the
 *   longest waiting).
 */
import { randomUUID } from "node:crypto";
import type { JobHandle, Runtime } from "../src/index.ts";
import { silentLogger } from "../src/kernel/logger.ts";
import { createRuntime } from "./lib/jetstate.ts";
import { median, round } from "./lib/stats.ts";

export interface PriorityShape {
  /** Jobs of the backlog, each of `backlogTasks / backlogJobs` tasks. */
  readonly backlogJobs: number;
  readonly backlogTasks: number;
  readonly taskMs: number;
  /** Measured jobs of each priority. */
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

export interface PriorityScenario {
  readonly shape: PriorityShape;
  readonly priority10: Latencies;
  readonly priority0: Latencies;
  /** The backlog's tasks not yet answered when the last measured job started (> 0: none waited for it). */
  readonly backlogLeftAtLast: number;
  /** Backlog tasks answered per second while the jobs came. */
  readonly backlogTasksPerSecond: number;
}

export interface PriorityResult {
  readonly behindBacklog: PriorityScenario;
  readonly behindManyJobs: PriorityScenario;
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const latencies = (startMs: number[], submitMs: number[]): Latencies => ({
  p50Ms: round(median(startMs), 1),
  maxMs: round(Math.max(...startMs), 1),
  submitP50Ms: round(median(submitMs), 1),
});

async function scenario(url: string, shape: PriorityShape): Promise<PriorityScenario> {
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
        await pause(shape.taskMs);
        return null;
      },
    });
    // The workers' record watch starts before the backlog: it is not a late learner.
    await pause(200);
    const perJob = Math.ceil(shape.backlogTasks / shape.backlogJobs);
    const backlog: JobHandle[] = [];
    for (let b = 0; b < shape.backlogJobs; b++) {
      backlog.push(
        await submitter.jobs.submit({ queue, tasks: Array.from({ length: perJob }, (_, i) => i) }),
      );
    }
    const answered = () =>
      backlog.reduce((sum, job) => {
        const s = job.snapshot();
        return sum + s.done + s.failed + s.dead;
      }, 0);
    // Busy first: every backlog job's loop holds its prefetched tasks and waits for slots.
    while (backlog.some((job) => job.snapshot().done === 0) || answered() < 2000 / shape.taskMs)
      await pause(20);
    const answeredBefore = answered();
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
    const now = answered();
    const backlogLeftAtLast = perJob * shape.backlogJobs - now;
    const backlogTasksPerSecond = round(((now - answeredBefore) * 1000) / (performance.now() - since), 0);
    if (backlogLeftAtLast === 0)
      throw new Error("the backlog ran out before the last job: the figures measure no backlog");
    for (const job of backlog) await job.cancel("bench over");
    return { shape, priority10, priority0, backlogLeftAtLast, backlogTasksPerSecond };
  } finally {
    for (const rt of runtimes.reverse()) await rt.stop();
  }
}

export async function measurePriority(url: string, jobs = 10): Promise<PriorityResult> {
  return {
    behindBacklog: await scenario(url, {
      backlogJobs: 1,
      backlogTasks: 100_000,
      taskMs: 1,
      jobs,
      concurrency: 8,
    }),
    behindManyJobs: await scenario(url, {
      backlogJobs: 32,
      backlogTasks: 32_000,
      taskMs: 10,
      jobs,
      concurrency: 8,
    }),
  };
}
