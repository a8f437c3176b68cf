/**
 * Runs in its own process (`node --expose-gc --import tsx`), so nothing else
 * the bench did is in its heap. Prints one JSON line on stdout.
 *   job-100k <url> [tasks]  one job of 100k tasks, processed by native workers
 *                           (concurrency 50); baseline, peak while it runs,
 *                           and after it ended.
 *   idle-jobs <url> [jobs]  1000 submitted 1-task jobs that no worker serves:
 *                           1000 live job actors; bytes per job.
 * Baselines are taken with the runtime connected and set up, after gc().
 */
import { freshRuntime } from "./jetstate-e2e.ts";
import { sleep } from "./lib/stats.ts";
import { makePayloads, uniqueName } from "./lib/tasks.ts";

interface Usage {
  readonly rss: number;
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly external: number;
  readonly arrayBuffers: number;
}

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("memory-child needs node --expose-gc");

const settled = async (): Promise<Usage> => {
  for (let k = 0; k < 3; k++) {
    gc();
    await sleep(20);
  }
  const { rss, heapUsed, heapTotal, external, arrayBuffers } = process.memoryUsage();
  return { rss, heapUsed, heapTotal, external, arrayBuffers };
};

const [mode, url, countArg] = process.argv.slice(2);
if (!url) throw new Error("usage: memory-child.ts job-100k|idle-jobs <url> [count]");

const bigJob = async (tasks: number) => {
  const rt = await freshRuntime(url, "mem", 0);
  const queue = uniqueName("q", "mem");
  rt.workers.start({ queue, concurrency: 50, handler: () => null });
  const payloads = makePayloads(tasks);
  await sleep(200);
  const baseline = await settled();
  let peakRss = 0;
  let peakHeap = 0;
  const sample = () => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
  };
  const sampler = setInterval(sample, 25);
  const started = performance.now();
  const job = await rt.jobs.submit({ queue, tasks: payloads });
  const final = await job.done();
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  sample();
  if (final.status !== "succeeded" || final.done !== tasks) throw new Error(`job ended ${final.status}`);
  const after = await settled();
  await rt.stop();
  return { mode: "job-100k", tasks, seconds, baseline, peak: { rss: peakRss, heapUsed: peakHeap }, after };
};

const idleJobs = async (jobs: number) => {
  const rt = await freshRuntime(url, "idle", 0);
  const queue = uniqueName("q", "idle");
  // One job first, so the baseline has every lazily created part of the runtime.
  await rt.jobs.submit({ queue, tasks: [{ n: -1 }] });
  await sleep(200);
  const baseline = await settled();
  const started = performance.now();
  const parallel = 16;
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < jobs) {
        const n = next++;
        await rt.jobs.submit({ queue, tasks: [{ n }] });
      }
    }),
  );
  const submitSeconds = (performance.now() - started) / 1000;
  // Let every job's results feed and clock start before measuring.
  await sleep(1000);
  const after = await settled();
  await rt.stop();
  return {
    mode: "idle-jobs",
    jobs,
    submitSeconds,
    baseline,
    after,
    perJob: {
      rss: Math.round((after.rss - baseline.rss) / jobs),
      heapUsed: Math.round((after.heapUsed - baseline.heapUsed) / jobs),
      external: Math.round((after.external - baseline.external) / jobs),
    },
  };
};

const result =
  mode === "job-100k"
    ? await bigJob(Number(countArg ?? 100_000))
    : mode === "idle-jobs"
      ? await idleJobs(Number(countArg ?? 1000))
      : undefined;
if (!result) throw new Error(`unknown mode ${mode}`);
process.stdout.write(`${JSON.stringify(result)}\n`);
// A stopped runtime leaves nothing running, but the bench must not hang on a leak it does not measure.
process.exit(0);
