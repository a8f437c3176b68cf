/**
 * Submit latency: how long `rt.jobs.submit()` takes to resolve (the job is
 * committed: record created, tasks published, consumer created, record
 * marked committed) for jobs of 1, 100 and 10 000 tasks. No worker listens;
 * each job is cancelled after it is measured. One untimed warm-up submit.
 */
import { freshRuntime } from "./jetstate-e2e.ts";
import { median, round } from "./lib/stats.ts";
import { makePayloads, uniqueName } from "./lib/tasks.ts";

export interface SubmitLatency {
  readonly tasks: number;
  readonly ms: readonly number[];
  readonly medianMs: number;
}

export async function measureSubmitLatency(url: string, sizes: readonly number[], reps: number) {
  const rt = await freshRuntime(url, "sub", 0);
  try {
    const queue = uniqueName("q", "sub");
    await (await rt.jobs.submit({ queue, tasks: makePayloads(10) })).cancel("warm-up");
    const results: SubmitLatency[] = [];
    for (const tasks of sizes) {
      const payloads = makePayloads(tasks);
      const ms: number[] = [];
      for (let rep = 0; rep < reps; rep++) {
        const started = performance.now();
        const job = await rt.jobs.submit({ queue, tasks: payloads });
        ms.push(round(performance.now() - started, 1));
        await job.cancel("measured");
      }
      results.push({ tasks, ms, medianMs: round(median(ms), 1) });
    }
    return results;
  } finally {
    await rt.stop();
  }
}
