/**
 * jetstate end to end: one runtime (one connection) that submits a job of N
 * tasks and runs native workers with a no-op handler (total concurrency 50 by
 * default). Timed from just before `submit()` to `done()` resolving, so the
 * atomic submit (record, publishes, consumer, commit), the workers (results
 * batched, acks after their PubAck) and the job actor's supervision up to the
 * final record are all inside.
 *
 * Task latency: (moment the handler saw the task) − (moment `submit()` was
 * called). It includes the submit, during which no task is visible yet.
 */
import { pino } from "pino";
import type { Runtime } from "../src/index.ts";
import { createRuntime } from "./lib/jetstate.ts";
import { cpuMicrosSince, sleep } from "./lib/stats.ts";
import { type BenchPayload, makePayloads, uniqueName } from "./lib/tasks.ts";
import { type RunOptions, type ThroughputRun, throughputRun } from "./lib/throughput.ts";

export interface WorkerShape {
  readonly workers: number;
  /** Per worker; workers × concurrency is the total. */
  readonly concurrency: number;
}

export const silent = pino({ level: "silent" });

/** `createRuntime` of the source tree under test (another checkout's, to compare two in one process). */
export type CreateRuntime = typeof createRuntime;

/** A runtime on fresh streams (its own prefix), set up and connected before anything is timed. */
export async function freshRuntime(
  url: string,
  kind: string,
  rep: number | string,
  create: CreateRuntime = createRuntime,
  replicas = 1,
): Promise<Runtime> {
  const rt = await create({
    servers: url,
    // Only when asked: another checkout's createRuntime (bench/compare.ts) may not know the option.
    ...(replicas !== 1 ? { replicas } : {}),
    logger: silent,
    prefix: uniqueName(kind, rep),
    name: `bench-${kind}`,
  });
  // Any broker call creates the shared streams and the bucket of this prefix; a queue's own
  // streams are made by runJetstate before the clock starts, as raw makes its stream.
  await rt.jobs.list();
  return rt;
}

export interface JetstateRunOptions extends RunOptions {
  readonly shape: WorkerShape;
  readonly createRuntime?: CreateRuntime;
}

export async function runJetstate(options: JetstateRunOptions): Promise<ThroughputRun> {
  const { url, n, rep, shape, serverCpu, hooks = {} } = options;
  const rt = await freshRuntime(url, "js", rep, options.createRuntime, options.replicas);
  try {
    const queue = uniqueName("q", rep);
    // The queue's streams exist before the clock starts, as raw's stream does (in production a
    // queue is made once, not per job; at R3 making them takes seconds). The job's own consumer,
    // jetstate's commit point, is still made inside the timed submit. Another checkout's
    // runtime (bench/compare.ts) may not have provision(): it makes them at the submit.
    if ("provision" in rt.admin) await rt.admin.provision([queue]);
    const seenAt = new Float64Array(n).fill(-1);
    let started = 0;
    for (let w = 0; w < shape.workers; w++) {
      rt.workers.start<BenchPayload, null>({
        queue,
        concurrency: shape.concurrency,
        handler: (task) => {
          if (seenAt[task.index]! < 0) seenAt[task.index] = performance.now() - started;
          return null;
        },
      });
    }
    // Let the workers' record watches start: a job they learn of late would be timed as slow.
    await sleep(200);
    const tasks = makePayloads(n);

    await hooks.started?.();
    const cpu = process.cpuUsage();
    const serverCpuStart = serverCpu?.();
    started = performance.now();
    const job = await rt.jobs.submit({ queue, tasks });
    const committed = performance.now();
    const submitCpu = cpuMicrosSince(cpu);
    // Only the profiler hooks in here; without it nothing is awaited between submit and done.
    if (hooks.committed) await hooks.committed();
    const final = await job.done();
    const ended = performance.now();
    const cpuMicros = cpuMicrosSince(cpu);
    const serverMicros = serverCpuStart === undefined ? undefined : serverCpu!() - serverCpuStart;
    await hooks.ended?.();

    if (final.status !== "succeeded" || final.done !== n) {
      throw new Error(`jetstate run ${rep}: job ended ${final.status} with ${final.done}/${n} done`);
    }
    return throughputRun("jetstate", rep, n, {
      started,
      published: committed,
      ended,
      publishCpuMicros: submitCpu,
      cpuMicros,
      serverCpuMicros: serverMicros,
      seenAt,
    });
  } finally {
    await rt.stop();
  }
}
