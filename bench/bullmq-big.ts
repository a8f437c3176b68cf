/**
 * BullMQ doing the big job's work, beside raw JetStream and jetstate in the
 * throughput section: the same N task payloads as N BullMQ jobs, added with
 * `addBulk` (1,000 a call, each awaited), as many Workers of the same
 * concurrency as jetstate's workers, with a no-op handler; a completed job
 * is removed (`removeOnComplete`), as an acked task leaves the work queue.
 * BullMQ has no job of many tasks to commit at once, so its worker, already
 * running, takes each job as soon as it is added: adding and running overlap,
 * where jetstate's workers see nothing before the commit. Timed from the
 * first add to the N-th `completed` event; a job that fails, or a run past
 * its bound, fails the run. Its server CPU is redis-server's. Its CPU "of
 * the adds" includes the jobs its workers ran meanwhile. Absent (undefined)
 * when no Redis answers on loopback.
 */
import { bullmqQueue, redisCpuClock } from "./lib/bullmq.ts";
import { cpuMicrosSince, sleep } from "./lib/stats.ts";
import { type BenchPayload, makePayloads, uniqueName } from "./lib/tasks.ts";
import { type RunOptions, type ThroughputRun, throughputRun } from "./lib/throughput.ts";

/** Jobs per `addBulk` call. */
const bulk = 1000;

export interface BullmqRunOptions extends Omit<RunOptions, "url" | "serverCpu"> {
  /** Workers, and the concurrency of each: jetstate's. */
  readonly workers: number;
  readonly concurrency: number;
}

/** How long a run may take before it fails: a lost job would otherwise wait for good. */
const boundMs = (n: number) => Math.max(60_000, n * 5);

export async function runBullmq(options: BullmqRunOptions): Promise<ThroughputRun | undefined> {
  const { n, rep, workers: workerCount, concurrency, hooks = {} } = options;
  const name = uniqueName("bullbig", rep);
  const ready = await bullmqQueue(name);
  if (!ready) return undefined;
  const { queue, connection } = ready;
  const { Worker } = await import("bullmq");
  const seenAt = new Float64Array(n).fill(-1);
  let started = 0;
  let completed = 0;
  let allCompleted: () => void = () => undefined;
  let broken: (error: Error) => void = () => undefined;
  const finished = new Promise<void>((resolve, reject) => {
    allCompleted = resolve;
    broken = reject;
  });
  // Settled once the run is over either way: a failure after it is nobody's to hear.
  finished.catch(() => undefined);
  const workers = Array.from({ length: workerCount }, () => {
    const worker = new Worker<BenchPayload, null>(
      name,
      async (job) => {
        const i = job.data.n;
        if (seenAt[i]! < 0) seenAt[i] = performance.now() - started;
        return null;
      },
      { connection, concurrency },
    );
    worker.on("completed", () => {
      if (++completed === n) allCompleted();
    });
    worker.on("failed", (job, error) =>
      broken(new Error(`bullmq run ${rep}: job ${job?.id} failed: ${error.message}`)),
    );
    worker.on("error", (error) => broken(error));
    return worker;
  });
  let bound: NodeJS.Timeout | undefined;
  try {
    await Promise.all(workers.map((w) => w.waitUntilReady()));
    // As jetstate's workers get theirs: the worker is waiting for jobs before the clock starts.
    await sleep(200);
    const payloads = makePayloads(n);
    const serverCpu = await redisCpuClock(connection);

    await hooks.started?.();
    const cpu = process.cpuUsage();
    const serverCpuStart = serverCpu?.();
    started = performance.now();
    for (let start = 0; start < n; start += bulk)
      await queue.addBulk(
        payloads.slice(start, start + bulk).map((data) => ({
          name: "t",
          data,
          opts: { removeOnComplete: true },
        })),
      );
    const added = performance.now();
    const addCpu = cpuMicrosSince(cpu);
    await hooks.committed?.();
    bound = setTimeout(
      () =>
        broken(new Error(`bullmq run ${rep}: ${completed} of ${n} jobs completed within ${boundMs(n)} ms`)),
      boundMs(n),
    );
    await finished;
    const ended = performance.now();
    const cpuMicros = cpuMicrosSince(cpu);
    const serverMicros = serverCpuStart === undefined ? undefined : serverCpu!() - serverCpuStart;
    await hooks.ended?.();
    const unseen = seenAt.filter((t) => t < 0).length;
    if (unseen > 0) throw new Error(`bullmq run ${rep}: ${unseen} of ${n} jobs never reached the handler`);
    return throughputRun("bullmq", rep, n, {
      started,
      published: added,
      ended,
      publishCpuMicros: addCpu,
      cpuMicros,
      serverCpuMicros: serverMicros,
      seenAt,
    });
  } finally {
    clearTimeout(bound);
    await Promise.all(workers.map((w) => w.close()));
    await queue.obliterate({ force: true });
    await queue.close();
  }
}
