/**
 * Runs in its own process (`node --expose-gc --import tsx`), so nothing else
 * the bench did is in its heap. Prints one JSON line on stdout.
 *   job-100k <url> [tasks]  one job of 100k tasks, processed by native workers
 *                           (concurrency 50); baseline, peak while it runs,
 *                           and after it ended.
 *   idle-jobs <url> [jobs]  1000 submitted 1-task jobs that no worker serves,
 *                           each with a consumer of its own (not on the
 *                           lane): 1000 live job actors; bytes per job.
 *                           Then a worker runs them all.
 *   live-jobs <url> [jobs]  10,000 1-task jobs on the lane submitted (64 in
 *                           flight) before a worker starts: all live at once
 *                           in one runtime, then all run; every one must
 *                           succeed. Times, heap, and the job statuses.
 * Baselines are taken with the runtime connected and set up, after gc().
 * With `JETSTATE_BENCH_MONITOR` (the server's monitoring URL) the jobs modes
 * also read the server's consumer count from `/jsz`: before the jobs, while
 * they are live, and once they ended (the runtime still up).
 *
 * The runtime measured is the package's build (`dist/`, bench/lib/jetstate.ts),
 * unless `JETSTATE_BENCH_SOURCES=1` asks for the sources through tsx: tsx
 * keeps every function's name as a property of its own, ~9 KB more heap
 * per job than the build users install.
 */
import { freshRuntime } from "./jetstate-e2e.ts";
import { createRuntime, measured } from "./lib/jetstate.ts";
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

interface Jsz {
  consumers: number;
  account_details?: { stream_detail?: { name: string; consumer_detail?: { name: string }[] }[] }[];
}

/**
 * From the server's `/jsz` (when its monitoring URL was given): every
 * consumer on the server, and the consumers of the queue's tasks stream but
 * its lane, which are the jobs' own.
 */
const monitor = process.env.JETSTATE_BENCH_MONITOR;
const consumersOnServer = async (tasksStream: string) => {
  if (!monitor) return undefined;
  const jsz = (await (await fetch(`${monitor}/jsz?accounts=true&streams=true&consumers=true`)).json()) as Jsz;
  const streams = (jsz.account_details ?? []).flatMap((a) => a.stream_detail ?? []);
  const own = streams.find((s) => s.name === tasksStream)?.consumer_detail ?? [];
  return { all: jsz.consumers, jobs: own.filter((c) => c.name !== "lane").length };
};
if (!url) throw new Error("usage: memory-child.ts job-100k|idle-jobs|live-jobs <url> [count]");

const bigJob = async (tasks: number) => {
  const rt = await freshRuntime(url, "mem", 0, createRuntime);
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

/** The prefix `freshRuntime` gives a runtime: the names of its streams on the server. */
let prefix = "";
const withPrefix: typeof createRuntime = (options) => {
  prefix = options?.prefix ?? "jetstate";
  return createRuntime(options);
};

const idleJobs = async (jobs: number) => {
  const rt = await freshRuntime(url, "idle", 0, withPrefix);
  const queue = uniqueName("q", "idle");
  // Each with a consumer of its own (not on the lane, which 1-task jobs take by default): the
  // server's consumers per live job are counted below. One job first, so the baseline has
  // every lazily created part of the runtime.
  await rt.jobs.submit({ queue, tasks: [{ n: -1 }], lane: false });
  await sleep(200);
  const baseline = await settled();
  const started = performance.now();
  const parallel = 16;
  let next = 0;
  const handles: Array<Awaited<ReturnType<typeof rt.jobs.submit>>> = [];
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < jobs) {
        const n = next++;
        handles.push(await rt.jobs.submit({ queue, tasks: [{ n }], lane: false }));
      }
    }),
  );
  const submitSeconds = (performance.now() - started) / 1000;
  // Let every job's results feed and clock start before measuring.
  await sleep(1000);
  const after = await settled();
  const stream = `${prefix}_tasks_${queue}`;
  const consumersLive = await consumersOnServer(stream);
  // Then they run: each job's consumer must go with its end.
  const worker = rt.workers.start({ queue, concurrency: 64, handler: () => null });
  await Promise.all(handles.map((h) => h.done()));
  await worker.stop();
  const consumersEnded = await consumersOnServer(stream);
  await rt.stop();
  return {
    mode: "idle-jobs",
    jobs,
    submitSeconds,
    baseline,
    after,
    ...(consumersLive && consumersEnded ? { consumers: { live: consumersLive, ended: consumersEnded } } : {}),
    perJob: {
      rss: Math.round((after.rss - baseline.rss) / jobs),
      heapUsed: Math.round((after.heapUsed - baseline.heapUsed) / jobs),
      external: Math.round((after.external - baseline.external) / jobs),
    },
  };
};

const liveJobs = async (jobs: number) => {
  const rt = await freshRuntime(url, "live", 0, (options) =>
    withPrefix({
      ...options,
      jobs: { ...options?.jobs, lane: true },
    }),
  );
  const queue = uniqueName("q", "live");
  const stream = `${prefix}_tasks_${queue}`;
  const baseline = await settled();
  const consumersBefore = await consumersOnServer(stream);
  const cpu = process.cpuUsage();
  const started = performance.now();
  const handles: Array<Awaited<ReturnType<typeof rt.jobs.submit>>> = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < jobs) {
        const n = next++;
        handles.push(await rt.jobs.submit({ queue, tasks: [{ n }] }));
      }
    }),
  );
  const submitSeconds = (performance.now() - started) / 1000;
  const live = await settled();
  // And once each job's first second is over: a lane job's commit is written then (its first
  // write after its submit), so the heap right after the submits holds those writes in flight.
  await sleep(2500);
  const liveSettled = await settled();
  const consumersLive = await consumersOnServer(stream);
  const ran = new Set<number>();
  const worker = rt.workers.start<{ n: number }, number>({
    queue,
    concurrency: 64,
    handler: (task) => {
      ran.add(task.payload.n);
      return task.payload.n;
    },
  });
  const ends = await Promise.all(handles.map((h) => h.done()));
  const doneSeconds = (performance.now() - started) / 1000 - submitSeconds;
  const used = process.cpuUsage(cpu);
  await worker.stop();
  const consumersEnded = await consumersOnServer(stream);
  await rt.stop();
  const statuses: Record<string, number> = {};
  for (const end of ends) statuses[end.status] = (statuses[end.status] ?? 0) + 1;
  return {
    mode: "live-jobs",
    jobs,
    submitSeconds,
    doneSeconds,
    ran: ran.size,
    statuses,
    cpuSeconds: (used.user + used.system) / 1e6,
    heapPerLiveJob: Math.round((live.heapUsed - baseline.heapUsed) / jobs),
    heapPerLiveJobSettled: Math.round((liveSettled.heapUsed - baseline.heapUsed) / jobs),
    baseline,
    live,
    ...(consumersBefore && consumersLive && consumersEnded
      ? { consumers: { before: consumersBefore, live: consumersLive, ended: consumersEnded } }
      : {}),
  };
};

const result =
  mode === "job-100k"
    ? await bigJob(Number(countArg ?? 100_000))
    : mode === "idle-jobs"
      ? await idleJobs(Number(countArg ?? 1000))
      : mode === "live-jobs"
        ? await liveJobs(Number(countArg ?? 10_000))
        : undefined;
if (!result) throw new Error(`unknown mode ${mode}`);
process.stdout.write(`${JSON.stringify({ ...result, measured })}\n`);
// A stopped runtime leaves nothing running, but the bench must not hang on a leak it does not measure.
process.exit(0);
