/**
 * Fairness: 1-task jobs submitted one after the other on a queue whose
 * worker is busy with a big job (`bigTasks` tasks, submitted first), each
 * timed from `submit()` to `done()`. A FIFO queue would make each wait for
 * the whole backlog; jetstate's worker takes each job's next task in turn
 * (round robin of the jobs' pull loops), so a small job waits for about one
 * task per job ahead of it. The big job's remaining tasks are sampled when
 * each small job ends: the oracle that the small ones did not wait for it.
 */
import { freshRuntime } from "./jetstate-e2e.ts";
import { median, round } from "./lib/stats.ts";
import { uniqueName } from "./lib/tasks.ts";

export interface FairnessShape {
  readonly bigTasks: number;
  readonly smallJobs: number;
  readonly concurrency: number;
}

export interface FairnessResult {
  readonly shape: FairnessShape;
  /** submit() → done() of each small job, ms. */
  readonly smallP50Ms: number;
  readonly smallP90Ms: number;
  readonly smallMaxMs: number;
  /** The big job's tasks left when the last small job ended (> 0: none waited for it). */
  readonly bigLeftAtLastSmall: number;
  readonly bigSeconds: number;
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;

export async function measureFairness(url: string, shape: FairnessShape): Promise<FairnessResult> {
  const rt = await freshRuntime(url, "fair", 0);
  try {
    const queue = uniqueName("q", "fair");
    await rt.admin.provision([queue]);
    rt.workers.start<number, number>({
      queue,
      concurrency: shape.concurrency,
      // A little work per task, as a model call would have: the backlog lasts while small jobs come.
      handler: async (task) => {
        await new Promise((resolve) => setImmediate(resolve));
        return task.payload;
      },
    });
    const started = performance.now();
    const big = await rt.jobs.submit({ queue, tasks: Array.from({ length: shape.bigTasks }, (_, i) => i) });
    const bigDone = big.done();
    // Let the backlog build: the worker is busy with the big job before the first small one.
    while (big.snapshot().done < Math.min(2000, shape.bigTasks / 10))
      await new Promise((r) => setTimeout(r, 20));
    const times: number[] = [];
    let bigLeft = Number.NaN;
    for (let k = 0; k < shape.smallJobs; k++) {
      const t0 = performance.now();
      const small = await rt.jobs.submit({ queue, tasks: [k] });
      const end = await small.done();
      times.push(performance.now() - t0);
      if (end.status !== "succeeded") throw new Error(`small job ended ${end.status}`);
      const s = big.snapshot();
      bigLeft = s.total - s.done - s.failed - s.dead;
      if (bigLeft === 0) break; // the backlog is gone: what follows measures nothing
      await new Promise((r) => setTimeout(r, 50));
    }
    const bigEnd = await bigDone;
    if (bigEnd.status !== "succeeded") throw new Error(`big job ended ${bigEnd.status}`);
    const sorted = [...times].sort((a, b) => a - b);
    return {
      shape,
      smallP50Ms: round(median(times), 1),
      smallP90Ms: round(percentile(sorted, 0.9), 1),
      smallMaxMs: round(sorted.at(-1) ?? Number.NaN, 1),
      bigLeftAtLastSmall: bigLeft,
      bigSeconds: round((performance.now() - started) / 1000, 1),
    };
  } finally {
    await rt.stop();
  }
}
