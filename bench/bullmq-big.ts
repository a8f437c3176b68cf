/**
 * BullMQ doing the big job's work, beside raw JetStream and jetstate in the
 * throughput section: the same N task payloads as N BullMQ jobs, added with
 * `addBulk` (1,000 a call, each awaited), a Worker of the same concurrency
 * with a no-op handler, `removeOnComplete` as the small-jobs side sets it.
 * BullMQ has no job of many tasks to commit at once, so its worker, already
 * running, takes each job as soon as it is added: adding and running overlap,
 * where jetstate's workers see nothing before the commit. Timed from the
 * first add to the N-th `completed` event. Its server CPU is redis-server's.
 * Absent (undefined) when no Redis answers on loopback.
 */
import { bullmqQueue, redisCpuClock } from "./lib/bullmq.ts";
import { cpuMicrosSince, sleep } from "./lib/stats.ts";
import { type BenchPayload, makePayloads, uniqueName } from "./lib/tasks.ts";
import { type RunOptions, type ThroughputRun, throughputRun } from "./lib/throughput.ts";

/** Jobs per `addBulk` call. */
const bulk = 1000;

export interface BullmqRunOptions extends Omit<RunOptions, "url" | "serverCpu"> {
  readonly concurrency: number;
}

export async function runBullmq(options: BullmqRunOptions): Promise<ThroughputRun | undefined> {
  const { n, rep, concurrency, hooks = {} } = options;
  const name = uniqueName("bullbig", rep);
  const ready = await bullmqQueue(name);
  if (!ready) return undefined;
  const { queue, connection } = ready;
  const { Worker } = await import("bullmq");
  const seenAt = new Float64Array(n).fill(-1);
  let started = 0;
  let completed = 0;
  let allCompleted: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => {
    allCompleted = resolve;
  });
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
  try {
    await worker.waitUntilReady();
    // As jetstate's workers get theirs: the worker is waiting for jobs before the clock starts.
    await sleep(200);
    const payloads = makePayloads(n);
    const serverCpu = redisCpuClock(connection);

    await hooks.started?.();
    const cpu = process.cpuUsage();
    const serverCpuStart = serverCpu?.();
    started = performance.now();
    for (let start = 0; start < n; start += bulk)
      await queue.addBulk(
        payloads.slice(start, start + bulk).map((data) => ({
          name: "t",
          data,
          opts: { removeOnComplete: { count: 10_000 } },
        })),
      );
    const added = performance.now();
    const addCpu = cpuMicrosSince(cpu);
    await hooks.committed?.();
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
    await worker.close();
    await queue.obliterate({ force: true });
    await queue.close();
  }
}
