/**
 * Small jobs: what a job costs when it is almost nothing but its overhead.
 * Each side runs the same work — a 1-task job whose handler doubles a number,
 * and whose submitter waits for the result — in two shapes:
 *   - in flight: `jobs` jobs, `inFlight` of them submitted and awaited at once
 *     (jobs/s from the first submit to the last result);
 *   - one at a time: `serial` jobs in a row (p50 of submit and of
 *     submit → result).
 * Sides: jetstate (`submit()` → `done()`) with `jobs.lane` (its default
 * since 0.3: each 1-task job on its queue's lane, no consumer of its own),
 * with `lane: false` (a consumer per job, the side named `jetstate` in the
 * result files) and with `lane: false, memoryConsumers: true` (that
 * consumer in the server's memory), raw JetStream doing the minimum for
 * the same work (publish the task with its PubAck, a pull consumer takes it,
 * the worker publishes the result with its PubAck and acks the task, the
 * submitter reads the result from one subscription), and BullMQ when a Redis
 * answers (`add()` → `waitUntilFinished()`). Interleaved per repetition.
 */
import { AckPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { freshRuntime } from "./jetstate-e2e.ts";
import { bullmqQueue, redisCpuClock } from "./lib/bullmq.ts";
import { createRuntime } from "./lib/jetstate.ts";
import { median, round } from "./lib/stats.ts";
import { uniqueName } from "./lib/tasks.ts";
import type { CpuClock } from "./lib/throughput.ts";

export interface SmallJobsShape {
  readonly jobs: number;
  readonly inFlight: number;
  readonly serial: number;
  /** Untimed jobs each side runs first. */
  readonly warmUp: number;
}

export interface SmallJobsRun {
  readonly side: "jetstate" | "jetstate-lane" | "jetstate-memory" | "raw" | "bullmq";
  readonly rep: number;
  readonly jobsPerSec: number;
  /** CPU per job while in flight: this process (submitter and worker), and nats-server when known. */
  readonly clientCpuMicrosPerJob: number;
  readonly serverCpuMicrosPerJob?: number;
  readonly submitP50Ms: number;
  readonly roundTripP50Ms: number;
}

/** One side's work: submit a 1-task job for `n`, resolve with its result. */
interface Side {
  readonly name: SmallJobsRun["side"];
  /** Its server's CPU clock when that is not nats-server (BullMQ's Redis): undefined when unknown. */
  readonly serverCpu?: CpuClock;
  /** Resolves when the job is accepted; its `result` when the answer is read. */
  submit(n: number): Promise<{ result: Promise<number> }>;
  close(): Promise<void>;
}

const measure = async (
  side: Side,
  shape: SmallJobsShape,
  rep: number,
  serverCpu?: () => number,
): Promise<SmallJobsRun> => {
  let next = 0;
  const cpu = process.cpuUsage();
  // A side with a server of its own reports its server's CPU or none, never nats-server's.
  const clock = "serverCpu" in side ? side.serverCpu : serverCpu;
  const serverCpuStart = clock?.();
  const started = performance.now();
  const lane = async () => {
    while (next < shape.jobs) {
      const n = next++;
      const { result } = await side.submit(n);
      if ((await result) !== n * 2) throw new Error(`${side.name}: wrong result for ${n}`);
    }
  };
  await Promise.all(Array.from({ length: shape.inFlight }, lane));
  const jobsPerSec = Math.round(shape.jobs / ((performance.now() - started) / 1000));
  const used = process.cpuUsage(cpu);
  const serverMicros = serverCpuStart === undefined ? undefined : clock!() - serverCpuStart;
  const submitMs: number[] = [];
  const roundTripMs: number[] = [];
  for (let k = 0; k < shape.serial; k++) {
    const t0 = performance.now();
    const { result } = await side.submit(k);
    submitMs.push(performance.now() - t0);
    await result;
    roundTripMs.push(performance.now() - t0);
  }
  return {
    side: side.name,
    rep,
    jobsPerSec,
    clientCpuMicrosPerJob: Math.round((used.user + used.system) / shape.jobs),
    ...(serverMicros === undefined ? {} : { serverCpuMicrosPerJob: Math.round(serverMicros / shape.jobs) }),
    submitP50Ms: round(median(submitMs), 2),
    roundTripP50Ms: round(median(roundTripMs), 2),
  };
};

const jetstateSide = async (
  url: string,
  rep: number,
  concurrency: number,
  lane = false,
  memoryConsumers = false,
): Promise<Side> => {
  const rt = await freshRuntime(url, lane ? "smalllane" : "small", rep, (options) =>
    createRuntime({ ...options, jobs: { lane, memoryConsumers } }),
  );
  const queue = uniqueName("q", rep);
  await rt.admin.provision([queue]);
  const worker = rt.workers.start<number, number>({
    queue,
    concurrency,
    handler: (task) => task.payload * 2,
  });
  return {
    name: lane ? "jetstate-lane" : memoryConsumers ? "jetstate-memory" : "jetstate",
    submit: async (n) => {
      const job = await rt.jobs.submit<number, number>({ queue, tasks: [n] });
      const result = (async () => {
        await job.done();
        for await (const r of job.results()) if (r.ok) return r.result as number;
        throw new Error("jetstate: no result");
      })();
      return { result };
    },
    close: async () => {
      await worker.stop();
      await rt.stop();
    },
  };
};

const rawSide = async (url: string, rep: number, concurrency: number): Promise<Side> => {
  const name = uniqueName("rawsmall", rep);
  const nc = await connect({ servers: url.split(","), name: "bench-raw-small", noAsyncTraces: true });
  const jsm = await jetstreamManager(nc);
  const file = { storage: StorageType.File, num_replicas: 1 };
  await jsm.streams.add({ name, subjects: [`${name}.tasks`], retention: RetentionPolicy.Workqueue, ...file });
  await jsm.streams.add({ name: `${name}_results`, subjects: [`${name}.results.>`], ...file });
  await jsm.consumers.add(name, { durable_name: "work", ack_policy: AckPolicy.Explicit });
  const js = jetstream(nc);
  const waiting = new Map<number, (value: number) => void>();
  const results = nc.subscribe(`${name}.results.>`, {
    callback: (_, msg) => {
      const { i, r } = msg.json<{ i: number; r: number }>();
      waiting.get(i)?.(r);
      waiting.delete(i);
    },
  });
  const consumer = await js.consumers.get(name, "work");
  const messages = await consumer.consume({ max_messages: concurrency });
  const working = (async () => {
    for await (const m of messages) {
      const { i, p } = m.json<{ i: number; p: number }>();
      await js.publish(`${name}.results.${i}`, JSON.stringify({ i, r: p * 2 }));
      m.ack();
    }
  })();
  let id = 0;
  return {
    name: "raw",
    submit: async (n) => {
      const i = id++;
      const result = new Promise<number>((resolve) => waiting.set(i, resolve));
      await js.publish(`${name}.tasks`, JSON.stringify({ i, p: n }));
      return { result };
    },
    close: async () => {
      await messages.close();
      await working;
      results.unsubscribe();
      await jsm.streams.delete(name);
      await jsm.streams.delete(`${name}_results`);
      await nc.close();
    },
  };
};

/** BullMQ on the Redis of REDIS_URL (or 127.0.0.1:6379 when it answers), else none. */
const bullmqSide = async (rep: number, concurrency: number): Promise<Side | undefined> => {
  const name = uniqueName("bullsmall", rep);
  const ready = await bullmqQueue(name);
  if (!ready) return undefined;
  const { queue, connection } = ready;
  const { QueueEvents, Worker } = await import("bullmq");
  const events = new QueueEvents(name, { connection });
  await events.waitUntilReady();
  // Each waiting job adds a listener; 64 in flight is not a leak.
  queue.setMaxListeners(0);
  events.setMaxListeners(0);
  const worker = new Worker(name, async (job) => (job.data as number) * 2, { connection, concurrency });
  await worker.waitUntilReady();
  const serverCpu = await redisCpuClock(connection);
  return {
    name: "bullmq",
    serverCpu,
    submit: async (n) => {
      const job = await queue.add("t", n, { removeOnComplete: { count: 10_000 } });
      return { result: job.waitUntilFinished(events) as Promise<number> };
    },
    close: async () => {
      await worker.close();
      await events.close();
      await queue.obliterate({ force: true });
      await queue.close();
    },
  };
};

/** Every side, interleaved per repetition; BullMQ's runs are absent when no Redis answers. */
export async function measureSmallJobs(
  url: string,
  shape: SmallJobsShape,
  reps: number,
  log: (line: string) => void,
  serverCpu?: () => number,
) {
  const runs: SmallJobsRun[] = [];
  const concurrency = shape.inFlight;
  const sides = (rep: number) => [
    () => rawSide(url, rep, concurrency),
    () => jetstateSide(url, rep, concurrency),
    () => jetstateSide(url, rep, concurrency, true),
    () => jetstateSide(url, rep, concurrency, false, true),
    () => bullmqSide(rep, concurrency),
  ];
  // Untimed, each side first runs `shape.warmUp` jobs (10,000 by default): the measure is of a service that has been up
  // a while. V8 compiles the lane's path over its first ~10,000 jobs, on threads whose CPU the
  // process's counts: in one process, 4,000 lane jobs a repetition on a fresh runtime each, 991,
  // 464, 122, 60 and 66 functions optimised and 573, 526, 347, 302 and 384 µs of client CPU a job
  // per repetition. With 200 jobs each, the first two repetitions measured that compilation.
  for (const make of sides(-1)) {
    const side = await make();
    if (!side) continue;
    await measure(side, { ...shape, jobs: shape.warmUp, serial: 5 }, -1);
    await side.close();
  }
  for (let rep = 0; rep < reps; rep++) {
    for (const make of sides(rep)) {
      const side = await make();
      if (!side) continue;
      try {
        const run = await measure(side, shape, rep, serverCpu);
        runs.push(run);
        log(
          `small jobs ${run.side.padEnd(13)} rep ${rep}: ${run.jobsPerSec} jobs/s (${shape.inFlight} in flight; ` +
            `CPU/job client ${run.clientCpuMicrosPerJob} µs, server ${run.serverCpuMicrosPerJob ?? "?"} µs), ` +
            `one at a time: submit p50 ${run.submitP50Ms} ms, submit→result p50 ${run.roundTripP50Ms} ms`,
        );
      } finally {
        await side.close();
      }
    }
  }
  const of = (side: SmallJobsRun["side"]) => runs.filter((r) => r.side === side);
  const summary = (side: SmallJobsRun["side"]) => {
    const mine = of(side);
    if (mine.length === 0) return null;
    const serverCpus = mine.flatMap((r) => r.serverCpuMicrosPerJob ?? []);
    return {
      jobsPerSec: median(mine.map((r) => r.jobsPerSec)),
      clientCpuMicrosPerJob: median(mine.map((r) => r.clientCpuMicrosPerJob)),
      serverCpuMicrosPerJob: serverCpus.length === mine.length ? median(serverCpus) : null,
      submitP50Ms: round(median(mine.map((r) => r.submitP50Ms)), 2),
      roundTripP50Ms: round(median(mine.map((r) => r.roundTripP50Ms)), 2),
    };
  };
  const ratioTo = (side: SmallJobsRun["side"], of_: SmallJobsRun["side"] = "jetstate") => {
    const perRep = of(of_).map((j) => {
      const other = runs.find((r) => r.side === side && r.rep === j.rep);
      return other ? round(j.jobsPerSec / other.jobsPerSec, 3) : Number.NaN;
    });
    return perRep.length && perRep.every(Number.isFinite)
      ? { perRep, median: round(median(perRep), 3) }
      : null;
  };
  return {
    shape,
    runs,
    jetstate: summary("jetstate"),
    lane: summary("jetstate-lane"),
    memory: summary("jetstate-memory"),
    raw: summary("raw"),
    bullmq: summary("bullmq"),
    ratioToRaw: ratioTo("raw"),
    ratioToBullmq: ratioTo("bullmq"),
    laneRatioToRaw: ratioTo("raw", "jetstate-lane"),
    laneRatioToBullmq: ratioTo("bullmq", "jetstate-lane"),
  };
}

export type SmallJobsResult = Awaited<ReturnType<typeof measureSmallJobs>>;
