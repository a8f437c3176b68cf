/**
 * `npm run bench [-- --n 2000]`: starts its own nats-server (file storage,
 * loopback, random ports) and measures, in this order:
 *   throughput   raw JetStream and jetstate end to end, interleaved
 *                (raw, jetstate, raw, jetstate, …), fresh streams per run;
 *   connections  a 1000-task job with 8 workers: connections the server saw;
 *   submit       submit latency for 1, 100 and 10 000 tasks;
 *   memory       a 100k-task job and 1000 idle jobs, each in a child process;
 *   small        1-task jobs, 64 in flight and one at a time: jetstate, raw JetStream
 *                doing the minimum, and BullMQ when a Redis answers (bench/small-jobs.ts);
 *   many         50 concurrent jobs of 100 tasks against one job of 5,000 (bench/many-jobs.ts);
 *   takeover     a job taken over after its supervisor's SIGKILL with 100,000 finished job
 *                records kept (bench/takeover.ts);
 *   list         rt.jobs.list() pages over 100,000 stored job records, against one full
 *                listRecords() (bench/list-jobs.ts);
 *   fairness     1-task jobs submitted while a 200,000-task job keeps the worker busy:
 *                their submit → done() (bench/fairness.ts);
 *   scheduling   delayed tasks' lateness, priority behind a backlog, queue rate/concurrency
 *                limits and pause across worker processes, flows (bench/scheduling.ts);
 *   cluster      (only with --only …,cluster) raw and jetstate on a 3-node cluster at R3,
 *                interleaved, beside the single server's figures of the same run;
 *   plane        (only with --only plane) the per-job protocol of the small-job plane's
 *                designs with raw nats.js, consumer churn, idle consumers and actors
 *                (bench/job-plane.ts; ~3 min).
 * Writes bench/results/<timestamp>.json and .md, and bench/results/latest.md.
 * The ratio jetstate ÷ raw is printed last. See bench/README.md.
 *
 * Options: --n N (or BENCH_N; default 20000), --reps R (3), --workers W (1),
 * --concurrency C (50 per worker), --only throughput,connections,submit,memory,small,many,list,takeover,fairness,scheduling[,cluster][,plane],
 * --mem-tasks (100000), --idle-jobs (1000), --live-jobs (10000), --small-jobs (2000), --small-warmup (10000), --list-records (100000), --fair-tasks (200000),
 * --takeover-records (100000), --target (0.85),
 * --plane-jobs (1000), --plane-consumers (1000: churn and live), --plane-parts designs,checks,steps,churn,live,actors (all).
 */
import { execFileSync } from "node:child_process";
import os from "node:os";
import { parseArgs } from "node:util";
import { startNatsCluster } from "../test/harness/nats-cluster.ts";
import { startNatsServer } from "../test/harness/nats-server.ts";
import { runBullmq } from "./bullmq-big.ts";
import { measureConnections } from "./connections.ts";
import { measureFairness } from "./fairness.ts";
import { runJetstate } from "./jetstate-e2e.ts";
import { measureJobPlane } from "./job-plane.ts";
import { measured } from "./lib/jetstate.ts";
import { serverCpuClock } from "./lib/server.ts";
import { typicalBodyBytes } from "./lib/tasks.ts";
import { ratios, summarise, type ThroughputRun } from "./lib/throughput.ts";
import { measureList } from "./list-jobs.ts";
import { measureManyJobs } from "./many-jobs.ts";
import { runMemoryChild } from "./memory.ts";
import { runRaw } from "./raw-jetstream.ts";
import { type BenchDocument, markdown, writeResults } from "./report.ts";
import { measureScheduling } from "./scheduling.ts";
import { measureSmallJobs } from "./small-jobs.ts";
import { measureSubmitLatency } from "./submit-latency.ts";
import { measureTakeover } from "./takeover.ts";

const allSections = [
  "throughput",
  "connections",
  "submit",
  "memory",
  "small",
  "many",
  "list",
  "takeover",
  "fairness",
  "scheduling",
  "cluster",
  "plane",
] as const;
/**
 * Sections run unless `--only` names others: the cluster one starts three more servers, and the
 * plane one takes ~3 min, so they are asked for.
 */
const defaultSections: string[] = allSections.filter((s) => s !== "cluster" && s !== "plane");

const { values } = parseArgs({
  options: {
    n: { type: "string" },
    reps: { type: "string", default: "3" },
    workers: { type: "string", default: "1" },
    concurrency: { type: "string", default: "50" },
    only: { type: "string", default: defaultSections.join(",") },
    "mem-tasks": { type: "string", default: "100000" },
    "idle-jobs": { type: "string", default: "1000" },
    "live-jobs": { type: "string", default: "10000" },
    target: { type: "string", default: "0.85" },
    "small-jobs": { type: "string", default: "2000" },
    "small-warmup": { type: "string", default: "10000" },
    "takeover-records": { type: "string", default: "100000" },
    "list-records": { type: "string", default: "100000" },
    "fair-tasks": { type: "string", default: "200000" },
    "plane-jobs": { type: "string", default: "1000" },
    "plane-consumers": { type: "string", default: "1000" },
    "plane-parts": { type: "string", default: "designs,checks,steps,churn,live,actors" },
  },
});

const int = (text: string | undefined, name: string): number => {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1)
    throw new Error(`--${name} must be a positive integer, not ${text}`);
  return value;
};

const n = int(values.n ?? process.env.BENCH_N ?? "20000", "n");
const reps = int(values.reps, "reps");
const shape = {
  workers: int(values.workers, "workers"),
  concurrency: int(values.concurrency, "concurrency"),
};
const sections = values.only.split(",").map((s) => s.trim());
for (const s of sections) {
  if (!(allSections as readonly string[]).includes(s)) throw new Error(`--only: unknown section ${s}`);
}
const wants = (s: (typeof allSections)[number]) => sections.includes(s);

const gitDescribe = (): string | null => {
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
    const dirty =
      execFileSync("git", ["status", "--porcelain", "--", "src"], { encoding: "utf8" }).trim() !== "";
    return dirty ? `${head}+dirty-src` : head;
  } catch {
    return null;
  }
};

const log = (line: string) => process.stderr.write(`${line}\n`);
const describe = (r: ThroughputRun) =>
  `${r.kind.padEnd(13)} rep ${r.rep}: ${String(r.tasksPerSec).padStart(6)} tasks/s, ${r.seconds} s ` +
  `(publish/submit ${r.publishSeconds} s), client ${r.cpuMicrosPerTask} µs/task ` +
  `(${r.publishCpuMicrosPerTask} in publish/submit), ` +
  `server ${r.serverCpuMicrosPerTask ?? "?"} µs/task, latency p50 ${r.latencyMs.p50} ms p99 ${r.latencyMs.p99} ms; ` +
  `phases ms: publish ${r.phasesMs.publish}, to first ${r.phasesMs.toFirst}, tasks ${r.phasesMs.tasks}, tail ${r.phasesMs.tail}`;

/**
 * The same big job on a 3-node cluster with every stream at R3 (raw and
 * jetstate interleaved, as on one server), and each side's ratio to its own
 * single-server median of this run: what replication costs.
 */
async function measureCluster(
  singleJetstate: number | undefined,
  singleRaw: number | undefined,
): Promise<NonNullable<BenchDocument["cluster"]>> {
  const nodes = await startNatsCluster();
  try {
    const url = nodes.urls.join(",");
    const replicas = 3;
    await runRaw({ url, n: Math.min(n, 2000), rep: -1, replicas });
    await runJetstate({ url, n: Math.min(n, 2000), rep: -1, shape, replicas });
    const raw: ThroughputRun[] = [];
    const jetstate: ThroughputRun[] = [];
    for (let rep = 0; rep < reps; rep++) {
      raw.push(await runRaw({ url, n, rep, replicas }));
      log(`cluster ${describe(raw.at(-1)!)}`);
      jetstate.push(await runJetstate({ url, n, rep, shape, replicas }));
      log(`cluster ${describe(jetstate.at(-1)!)}`);
    }
    const rawSummary = summarise(raw);
    const jetstateSummary = summarise(jetstate);
    const toSingle = (clusterRate: number, single: number | undefined) =>
      single ? Math.round((clusterRate / single) * 1000) / 1000 : null;
    return {
      replicas,
      runs: raw.flatMap((r, k) => [r, jetstate[k]!]),
      raw: rawSummary,
      jetstate: jetstateSummary,
      ratio: ratios(raw, jetstate, Number(values.target)),
      jetstateToSingle: toSingle(jetstateSummary.tasksPerSec, singleJetstate),
      rawToSingle: toSingle(rawSummary.tasksPerSec, singleRaw),
    };
  } finally {
    await nodes.dispose();
  }
}

const startedAt = new Date().toISOString();
const server = await startNatsServer();
const notes: string[] = [
  "Raw: publish all N with js.publish() (windows of 256 awaited PubAcks), then consume() and ack each; timed from the first publish to the last ack (+ flush).",
  "Raw, pipelined: the same, published with jetstate's own technique (one reply subscription for all PubAcks, a message id per task, 256 in flight): jetstate's submit uses it, so this is the like-for-like baseline for the publish phase.",
  "BullMQ (when a Redis answers on loopback): the same N payloads as N jobs added with addBulk (1,000 a call, each removed once completed), as many Workers of the same concurrency as jetstate's, already running; timed from the first add to the N-th completed event. Its workers take jobs while they are added (no commit to wait for): its phases overlap, so its 'to the first task' is negative, and its CPU 'of it publish/submit' includes the jobs run meanwhile. Its server CPU is redis-server's.",
  "jetstate: timed from just before submit() to done() resolving (atomic submit, workers, results, final record).",
  "Task latency = (moment the consumer / handler saw the task) − (start of the publishes / of submit()); it includes the publish or submit, during which no task can be delivered.",
  "Client CPU = process.cpuUsage() of the bench process over the timed window, ÷ N; server CPU from /proc/<pid>/stat of nats-server.",
  "One untimed warm-up run of each side (min(N, 2000) tasks) precedes the measured ones.",
];
let doc: BenchDocument | undefined;
try {
  const machine = {
    node: process.versions.node,
    platform: `${process.platform}-${process.arch}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model.trim() ?? "?",
    natsServer: await server.version(),
    git: gitDescribe(),
    measured,
  };
  log(
    `nats-server ${machine.natsServer} at ${server.url}; N = ${n}, ${reps} reps, sections: ${sections.join(", ")}`,
  );
  const serverCpu = serverCpuClock(server);
  let throughput: BenchDocument["throughput"];
  if (wants("throughput")) {
    const warm = Math.min(n, 2000);
    await runRaw({ url: server.url, n: warm, rep: -1 });
    await runJetstate({ url: server.url, n: warm, rep: -1, shape });
    await runRaw({ url: server.url, n: warm, rep: -1, pipelined: true });
    const bullmqShape = { workers: shape.workers, concurrency: shape.concurrency };
    const withBullmq = (await runBullmq({ n: warm, rep: -1, ...bullmqShape })) !== undefined;
    const raw: ThroughputRun[] = [];
    const jetstate: ThroughputRun[] = [];
    const rawPipelined: ThroughputRun[] = [];
    const bullmq: ThroughputRun[] = [];
    for (let rep = 0; rep < reps; rep++) {
      raw.push(await runRaw({ url: server.url, n, rep, serverCpu }));
      log(describe(raw.at(-1)!));
      jetstate.push(await runJetstate({ url: server.url, n, rep, shape, serverCpu }));
      log(describe(jetstate.at(-1)!));
      rawPipelined.push(await runRaw({ url: server.url, n, rep, serverCpu, pipelined: true }));
      log(describe(rawPipelined.at(-1)!));
      if (withBullmq) {
        const bull = await runBullmq({ n, rep, ...bullmqShape });
        // Every repetition or none: a ratio pairs each jetstate run with the BullMQ run of its round.
        if (!bull) throw new Error(`bullmq run ${rep}: Redis answered the warm-up, not this repetition`);
        bullmq.push(bull);
        log(describe(bull));
      }
    }
    const bullmqRan = withBullmq;
    throughput = {
      runs: raw.flatMap((r, k) => [r, jetstate[k]!, rawPipelined[k]!, ...(bullmqRan ? [bullmq[k]!] : [])]),
      raw: summarise(raw),
      jetstate: summarise(jetstate),
      rawPipelined: summarise(rawPipelined),
      bullmq: bullmqRan ? summarise(bullmq) : null,
      ratio: ratios(raw, jetstate, Number(values.target)),
      ratioToPipelined: ratios(rawPipelined, jetstate, Number(values.target)),
      ratioToBullmq: bullmqRan ? ratios(bullmq, jetstate, Number.NaN) : null,
    };
  }
  let connections: BenchDocument["connections"];
  if (wants("connections")) {
    connections = await measureConnections(server);
    log(`connections: ${JSON.stringify(connections)}`);
  }
  let submitLatency: BenchDocument["submitLatency"];
  if (wants("submit")) {
    submitLatency = await measureSubmitLatency(server.url, [1, 100, 10_000], 3);
    log(`submit latency: ${submitLatency.map((s) => `${s.tasks} tasks ${s.medianMs} ms`).join(", ")}`);
  }
  let memory: BenchDocument["memory"];
  if (wants("memory")) {
    const job100k = await runMemoryChild("job-100k", server.url, int(values["mem-tasks"], "mem-tasks"));
    log(`memory, big job: ${JSON.stringify(job100k)}`);
    const idleJobs = await runMemoryChild(
      "idle-jobs",
      server.url,
      int(values["idle-jobs"], "idle-jobs"),
      server.monitorUrl,
    );
    log(`memory, idle jobs: ${JSON.stringify(idleJobs)}`);
    const liveJobs = await runMemoryChild(
      "live-jobs",
      server.url,
      int(values["live-jobs"], "live-jobs"),
      server.monitorUrl,
    );
    log(`memory, live jobs: ${JSON.stringify(liveJobs)}`);
    memory = { job100k, idleJobs, liveJobs };
  }
  let smallJobs: BenchDocument["smallJobs"];
  if (wants("small")) {
    const shape = {
      jobs: int(values["small-jobs"], "small-jobs"),
      inFlight: 64,
      serial: 200,
      warmUp: int(values["small-warmup"], "small-warmup"),
    };
    smallJobs = await measureSmallJobs(server.url, shape, reps, log, serverCpu);
  }
  let manyJobs: BenchDocument["manyJobs"];
  if (wants("many")) {
    manyJobs = await measureManyJobs(server.url, { jobs: 50, tasksPerJob: 100, concurrency: 50 }, reps, log);
  }
  let takeover: BenchDocument["takeover"];
  if (wants("takeover")) {
    const records = int(values["takeover-records"], "takeover-records");
    const shape = { records, leaseMs: 1000, tasks: 400 };
    takeover = await measureTakeover(server.url, shape, reps, log, serverCpu);
  }
  let list: BenchDocument["list"];
  if (wants("list")) {
    list = await measureList(
      server.url,
      { records: int(values["list-records"], "list-records"), calls: 50 },
      log,
    );
  }
  let fairness: BenchDocument["fairness"];
  if (wants("fairness")) {
    fairness = await measureFairness(server.url, {
      bigTasks: int(values["fair-tasks"], "fair-tasks"),
      smallJobs: 50,
      concurrency: shape.concurrency,
    });
    log(`fairness: ${JSON.stringify(fairness)}`);
  }
  let scheduling: BenchDocument["scheduling"];
  if (wants("scheduling")) scheduling = await measureScheduling(server.url, log);
  let jobPlane: BenchDocument["jobPlane"];
  if (wants("plane")) {
    const shape = {
      jobs: int(values["plane-jobs"], "plane-jobs"),
      minSeconds: 2,
      inFlight: 64,
      serial: 200,
      consumers: int(values["plane-consumers"], "plane-consumers"),
      actors: 10_000,
    };
    const parts = values["plane-parts"].split(",").map((s) => s.trim());
    jobPlane = await measureJobPlane(server, { shape, reps, parts }, log);
  }
  let cluster: BenchDocument["cluster"];
  if (wants("cluster")) {
    cluster = await measureCluster(throughput?.jetstate.tasksPerSec, throughput?.raw.tasksPerSec);
    log(`cluster: ${JSON.stringify({ ...cluster, runs: undefined })}`);
  }
  doc = {
    version: 1,
    startedAt,
    finishedAt: new Date().toISOString(),
    machine,
    config: {
      n,
      reps,
      taskBodyBytes: typicalBodyBytes(n),
      workers: shape.workers,
      concurrencyPerWorker: shape.concurrency,
      sections,
    },
    ...(throughput ? { throughput } : {}),
    ...(connections ? { connections } : {}),
    ...(submitLatency ? { submitLatency } : {}),
    ...(memory ? { memory } : {}),
    ...(smallJobs ? { smallJobs } : {}),
    ...(manyJobs ? { manyJobs } : {}),
    ...(takeover ? { takeover } : {}),
    ...(list ? { list } : {}),
    ...(fairness ? { fairness } : {}),
    ...(scheduling ? { scheduling } : {}),
    ...(cluster ? { cluster } : {}),
    ...(jobPlane ? { jobPlane } : {}),
    notes,
  };
} finally {
  await server.dispose();
}

const files = writeResults(doc);
console.log(markdown(doc));
log(`wrote ${files.json} and ${files.md}`);
const t = doc.throughput;
const c = doc.cluster;
if (c) {
  console.log(
    `cluster (R3): jetstate/raw ${c.ratio.medianOfRatios} (median of ratios); jetstate cluster/single ` +
      `${c.jetstateToSingle ?? "–"}, raw cluster/single ${c.rawToSingle ?? "–"}`,
  );
}
if (t) {
  const p = t.ratioToPipelined;
  console.log(
    `(for comparison, jetstate/raw with jetstate's publish technique: median of ratios ${p.medianOfRatios}, ` +
      `ratio of medians ${p.ratioOfMedians}, per rep ${p.perRep.join(", ")})`,
  );
  const b = t.ratioToBullmq;
  if (b)
    console.log(
      `jetstate/BullMQ at N=${n}: median of ratios ${b.medianOfRatios}, ratio of medians ${b.ratioOfMedians}, ` +
        `per rep ${b.perRep.join(", ")}`,
    );
  const r = t.ratio;
  console.log(
    `ratio jetstate/raw at N=${n}: median of ratios ${r.medianOfRatios}, ratio of medians ${r.ratioOfMedians} ` +
      `(per rep ${r.perRep.join(", ")}; target ≥ ${r.target}: ${r.met ? "met" : "NOT met"})`,
  );
}
