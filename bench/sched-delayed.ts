/**
 * Delayed tasks: how late a held task starts after its due time. One job of
 * `tasks` tasks whose due times are spread evenly over `spreadMs` (per-task
 * `taskRunAt`), and `wholeJobs` jobs held by a `delayMs` each (their due time
 * is the one the runtime computed, read from the handle's `runAt`), on a
 * runtime and its worker. Each handler start is stamped (Date.now(), the
 * clock the due times are in) against its task's due time: lateness = start
 * − due. An early start (lateness < 0) is a bug; the target is p99 ≤ 100 ms.
 */
import { freshRuntime } from "./jetstate-e2e.ts";
import { round } from "./lib/stats.ts";
import { uniqueName } from "./lib/tasks.ts";

export interface DelayedShape {
  readonly tasks: number;
  readonly spreadMs: number;
  /** Jobs of `wholeTasks` tasks each held by a job-wide `delayMs`. */
  readonly wholeJobs: number;
  readonly wholeTasks: number;
  readonly delayMs: number;
  readonly concurrency: number;
}

export const defaultDelayedShape: DelayedShape = {
  tasks: 500,
  spreadMs: 5000,
  wholeJobs: 10,
  wholeTasks: 10,
  delayMs: 3000,
  concurrency: 32,
};

export interface DelayedResult {
  readonly shape: DelayedShape;
  readonly handled: number;
  /** Handler starts before their due time: must be 0. */
  readonly early: number;
  readonly lateP50Ms: number;
  readonly lateP99Ms: number;
  readonly lateMaxMs: number;
  /** The same, for the jobs held by `delayMs`. */
  readonly wholeLateP50Ms: number;
  readonly wholeLateMaxMs: number;
  /** submit() of the spread job, ms (the held tasks stored, the consumer made). */
  readonly submitMs: number;
}

const percentile = (sorted: readonly number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;

export async function measureDelayed(
  url: string,
  shape: DelayedShape = defaultDelayedShape,
): Promise<DelayedResult> {
  const rt = await freshRuntime(url, "delayed", 0);
  try {
    const queue = uniqueName("q", "delayed");
    await rt.admin.provision([queue]);
    const starts: { jobId: string; due: number; at: number }[] = [];
    rt.workers.start<{ due: number }, null>({
      queue,
      concurrency: shape.concurrency,
      handler: (task) => {
        starts.push({ jobId: task.jobId, due: task.payload.due, at: Date.now() });
        return null;
      },
    });
    // Due from a second after the submit on: the submit itself is not measured as lateness.
    const first = Date.now() + 1000;
    const due = Array.from(
      { length: shape.tasks },
      (_, i) => first + Math.round((i * shape.spreadMs) / shape.tasks),
    );
    const t0 = performance.now();
    const spread = await rt.jobs.submit({ queue, tasks: due.map((at) => ({ due: at })), taskRunAt: due });
    const submitMs = performance.now() - t0;
    // Held by `delayMs`: due when the runtime says (its handle's `runAt`), not when this side guesses.
    const wholeDue = new Map<string, number>();
    const wholes = [];
    for (let j = 0; j < shape.wholeJobs; j++) {
      const job = await rt.jobs.submit({
        queue,
        tasks: Array.from({ length: shape.wholeTasks }, () => ({ due: 0 })),
        delayMs: shape.delayMs,
      });
      wholeDue.set(job.id, job.snapshot().runAt ?? Number.NaN);
      wholes.push(job);
    }
    await spread.done();
    for (const job of wholes) await job.done();
    const late = starts.map((s) => ({
      whole: wholeDue.has(s.jobId),
      ms: s.at - (wholeDue.get(s.jobId) ?? s.due),
    }));
    const sorted = (whole: boolean) =>
      late
        .filter((l) => l.whole === whole)
        .map((l) => l.ms)
        .sort((a, b) => a - b);
    const spreadLate = sorted(false);
    const wholeLate = sorted(true);
    return {
      shape,
      handled: late.length,
      early: late.filter((l) => l.ms < 0).length,
      lateP50Ms: round(percentile(spreadLate, 0.5)),
      lateP99Ms: round(percentile(spreadLate, 0.99)),
      lateMaxMs: round(spreadLate.at(-1) ?? Number.NaN),
      wholeLateP50Ms: round(percentile(wholeLate, 0.5)),
      wholeLateMaxMs: round(wholeLate.at(-1) ?? Number.NaN),
      submitMs: round(submitMs),
    };
  } finally {
    await rt.stop();
  }
}
