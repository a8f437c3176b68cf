/**
 * Many jobs: the same 5,000 tasks as 50 concurrent jobs of 100, against one
 * job of 5,000, on one runtime with the same workers, interleaved per
 * repetition. Timed from the first `submit()` to the last `done()`. The
 * ratio many ÷ one says what a job's fixed cost does to throughput. The many
 * jobs run as the defaults run them (on their queue's lane: 100 tasks is
 * within `jobs.laneMaxTasks`), then with consumers of their own on the
 * server's disk (`jobs.lane: false`), then with those consumers in its
 * memory (`jobs.memoryConsumers`: a third of the server's CPU to make and
 * delete), each against the same one job.
 */

import { freshRuntime } from "./jetstate-e2e.ts";
import { createRuntime } from "./lib/jetstate.ts";
import { median, round, sleep } from "./lib/stats.ts";
import { makePayloads, uniqueName } from "./lib/tasks.ts";

export interface ManyJobsShape {
  readonly jobs: number;
  readonly tasksPerJob: number;
  readonly concurrency: number;
}

/** How the many jobs are run: as the defaults run them, or each with a consumer of its own (on disk or in memory). */
type ManyWay = "lane" | "own" | "ownInMemory";
const jobsOptions = (way: ManyWay) =>
  way === "lane" ? {} : { lane: false, memoryConsumers: way === "ownInMemory" };

const run = async (
  url: string,
  rep: number,
  jobs: number,
  tasksPerJob: number,
  concurrency: number,
  way: ManyWay = "lane",
) => {
  const rt = await freshRuntime(url, "many", rep, (options) =>
    createRuntime({ ...options, jobs: jobsOptions(way) }),
  );
  try {
    const queue = uniqueName("q", rep);
    await rt.admin.provision([queue]);
    const worker = rt.workers.start({ queue, concurrency, handler: () => null });
    await sleep(200); // the worker's record watch is up before the clock starts
    const payloads = makePayloads(tasksPerJob);
    const started = performance.now();
    const ends = await Promise.all(
      Array.from({ length: jobs }, async () => (await rt.jobs.submit({ queue, tasks: payloads })).done()),
    );
    const seconds = (performance.now() - started) / 1000;
    await worker.stop();
    const done = ends.reduce((sum, end) => sum + (end.status === "succeeded" ? end.done : 0), 0);
    if (done !== jobs * tasksPerJob)
      throw new Error(`many jobs: ${done} of ${jobs * tasksPerJob} tasks done`);
    return Math.round(done / seconds);
  } finally {
    await rt.stop();
  }
};

export async function measureManyJobs(
  url: string,
  shape: ManyJobsShape,
  reps: number,
  log: (line: string) => void,
) {
  const { jobs, tasksPerJob, concurrency } = shape;
  // Untimed, each side at full size first: with a warm-up of 5 jobs, the first rep was the lowest
  // (0.48 of the one job, where the last two of 5 were at 0.72).
  for (const way of ["lane", "own", "ownInMemory"] as const)
    await run(url, -1, jobs, tasksPerJob, concurrency, way);
  await run(url, -1, 1, jobs * tasksPerJob, concurrency);
  const many: number[] = [];
  const one: number[] = [];
  const manyOwn: number[] = [];
  const manyInMemory: number[] = [];
  for (let rep = 0; rep < reps; rep++) {
    many.push(await run(url, rep, jobs, tasksPerJob, concurrency));
    one.push(await run(url, rep, 1, jobs * tasksPerJob, concurrency));
    manyOwn.push(await run(url, rep, jobs, tasksPerJob, concurrency, "own"));
    manyInMemory.push(await run(url, rep, jobs, tasksPerJob, concurrency, "ownInMemory"));
    log(
      `many jobs rep ${rep}: ${jobs} × ${tasksPerJob} tasks ${many.at(-1)} tasks/s (own consumers ${manyOwn.at(-1)}, in memory ${manyInMemory.at(-1)}), 1 × ${jobs * tasksPerJob} ${one.at(-1)} tasks/s`,
    );
  }
  const ratios = (side: number[]) => side.map((m, k) => round(m / (one[k] ?? Number.NaN), 3));
  const perRep = ratios(many);
  const perRepOwn = ratios(manyOwn);
  const perRepInMemory = ratios(manyInMemory);
  return {
    shape,
    many,
    one,
    perRep,
    ratio: round(median(perRep), 3),
    manyOwn,
    perRepOwn,
    ratioOwn: round(median(perRepOwn), 3),
    manyInMemory,
    perRepInMemory,
    ratioInMemory: round(median(perRepInMemory), 3),
  };
}

export type ManyJobsResult = Awaited<ReturnType<typeof measureManyJobs>>;
