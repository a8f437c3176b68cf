/**
 * The bench's output: one JSON document and one markdown page per run in
 * bench/results/ (`<timestamp>.json`, `<timestamp>.md`, and `latest.md`), so
 * runs can be compared by diffing or by reading the JSON.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { ConnectionsResult } from "./connections.ts";
import type { FairnessResult } from "./fairness.ts";
import { type JobPlaneResult, planeMarkdown } from "./job-plane.ts";
import { mib } from "./lib/stats.ts";
import type { RatioSummary, SideSummary, ThroughputRun } from "./lib/throughput.ts";
import type { ListResult } from "./list-jobs.ts";
import type { ManyJobsResult } from "./many-jobs.ts";
import { type SchedulingResult, schedulingMarkdown } from "./scheduling.ts";
import type { SmallJobsResult } from "./small-jobs.ts";
import type { SubmitLatency } from "./submit-latency.ts";
import type { TakeoverResult } from "./takeover.ts";

export interface BenchDocument {
  readonly version: 1;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly machine: {
    readonly node: string;
    readonly platform: string;
    readonly cpus: number;
    readonly cpuModel: string;
    readonly natsServer: string;
    readonly git: string | null;
    /** Which jetstate ran: the build (`dist`) or the sources through tsx; absent in older documents. */
    readonly measured?: string;
  };
  readonly config: {
    readonly n: number;
    readonly reps: number;
    readonly taskBodyBytes: number;
    readonly workers: number;
    readonly concurrencyPerWorker: number;
    readonly sections: readonly string[];
  };
  readonly throughput?: {
    readonly runs: readonly ThroughputRun[];
    readonly raw: SideSummary;
    readonly jetstate: SideSummary;
    /** Raw JetStream published with jetstate's technique instead of js.publish(). */
    readonly rawPipelined: SideSummary;
    /** jetstate ÷ raw: the target. */
    readonly ratio: RatioSummary;
    /** jetstate ÷ raw with jetstate's publish technique: for comparison. */
    readonly ratioToPipelined: RatioSummary;
    /** BullMQ on the same work (bench/bullmq-big.ts); null or absent when no Redis answered. */
    readonly bullmq?: SideSummary | null;
    /** jetstate ÷ BullMQ (no target: its `met` means nothing). */
    readonly ratioToBullmq?: RatioSummary | null;
  };
  readonly connections?: ConnectionsResult;
  readonly submitLatency?: readonly SubmitLatency[];
  readonly memory?: { readonly job100k?: unknown; readonly idleJobs?: unknown; readonly liveJobs?: unknown };
  /** 1-task jobs: jetstate, raw JetStream doing the minimum, BullMQ (bench/small-jobs.ts). */
  readonly smallJobs?: SmallJobsResult;
  /** 50 jobs of 100 tasks against one of 5,000 (bench/many-jobs.ts). */
  readonly manyJobs?: ManyJobsResult;
  /** A job taken over after its supervisor's SIGKILL, many finished records kept (bench/takeover.ts). */
  readonly takeover?: TakeoverResult;
  /** `rt.jobs.list()` pages over many stored records, against one full scan (bench/list-jobs.ts). */
  readonly list?: ListResult;
  /** 1-task jobs while a big job keeps the worker busy (bench/fairness.ts). */
  readonly fairness?: FairnessResult;
  /** Delayed tasks, priorities, queue limits and pause, flows (bench/scheduling.ts). */
  readonly scheduling?: SchedulingResult;
  /** The same job on a 3-node cluster, every stream at `replicas`. */
  readonly cluster?: {
    readonly replicas: number;
    readonly runs: readonly ThroughputRun[];
    readonly raw: SideSummary;
    readonly jetstate: SideSummary;
    /** jetstate ÷ raw, both on the cluster. */
    readonly ratio: RatioSummary;
    /** Cluster ÷ single server, tasks/s medians of the same run (null without the throughput section). */
    readonly jetstateToSingle: number | null;
    readonly rawToSingle: number | null;
  };
  /** The small-job plane's designs with raw nats.js, and what per-job consumers and actors cost (bench/job-plane.ts). */
  readonly jobPlane?: JobPlaneResult;
  readonly notes: readonly string[];
}

const resultsDir = fileURLToPath(new URL("./results/", import.meta.url));

/** `2026-11-25T15-27-12Z`: an ISO timestamp without the colons some file systems refuse. */
export const fileStamp = (iso: string): string => iso.replace(/\.\d+Z$/, "Z").replaceAll(":", "-");

export function writeResults(doc: BenchDocument): { json: string; md: string } {
  mkdirSync(resultsDir, { recursive: true });
  const stamp = fileStamp(doc.startedAt);
  const json = `${resultsDir}${stamp}.json`;
  const md = `${resultsDir}${stamp}.md`;
  const page = markdown(doc);
  writeFileSync(json, `${JSON.stringify(doc, null, 2)}\n`);
  writeFileSync(md, page);
  writeFileSync(`${resultsDir}latest.md`, page);
  return { json, md };
}

const cell = (v: number | null | undefined): string => (v === null || v === undefined ? "–" : String(v));

/** Server consumers counted from `/jsz` (bench/memory-child.ts): the jobs' own, and every one. */
interface ConsumerCounts {
  readonly all: number;
  readonly jobs: number;
}
interface ConsumerCountsAt {
  readonly before?: ConsumerCounts;
  readonly live: ConsumerCounts;
  readonly ended: ConsumerCounts;
}
const consumerCell = (c: ConsumerCounts | undefined) => (c ? `${c.jobs} / ${c.all}` : "–");

interface MemoryUsage {
  rss: number;
  heapUsed: number;
}

export function markdown(doc: BenchDocument): string {
  const lines: string[] = [];
  const { machine: m, config: c } = doc;
  lines.push(`# jetstate bench — ${doc.startedAt}`, "");
  lines.push(
    `Node ${m.node}, ${m.platform}, ${m.cpus} × ${m.cpuModel}, nats-server ${m.natsServer}, git ${m.git ?? "?"}, jetstate from ${m.measured ?? "src (tsx)"}. ` +
      `N = ${c.n}, ${c.reps} repetitions interleaved (raw, jetstate, raw pipelined, …), ` +
      `task body ${c.taskBodyBytes} B, ` +
      `${c.workers} worker(s) × concurrency ${c.concurrencyPerWorker}.`,
    "",
  );
  const t = doc.throughput;
  if (t) {
    lines.push("## Throughput (medians)", "");
    lines.push(
      "| | tasks/s | s | publish/submit s | client CPU µs/task | of it publish/submit | server CPU µs/task | latency p50 ms | latency p99 ms |",
    );
    lines.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const [name, s] of [
      ["raw JetStream", t.raw],
      ["jetstate", t.jetstate],
      ["raw, pipelined publish", t.rawPipelined],
      ...(t.bullmq ? ([["BullMQ (Redis), `addBulk`; server CPU redis-server's", t.bullmq]] as const) : []),
    ] as const) {
      lines.push(
        `| ${name} | ${s.tasksPerSec} | ${s.seconds} | ${s.publishSeconds} | ${s.cpuMicrosPerTask} | ${s.publishCpuMicrosPerTask} | ` +
          `${cell(s.serverCpuMicrosPerTask)} | ${s.latencyP50Ms} | ${s.latencyP99Ms} |`,
      );
    }
    lines.push(
      "",
      "Every run (phases: publish/submit, then to the first task seen, first to last task, last task to the end):",
      "",
      "| rep | side | tasks/s | s | client µs/task | server µs/task | p50 ms | p99 ms | phases ms |",
    );
    lines.push("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for (const r of t.runs) {
      const ph = r.phasesMs;
      lines.push(
        `| ${r.rep} | ${r.kind} | ${r.tasksPerSec} | ${r.seconds} | ${r.cpuMicrosPerTask} | ` +
          `${cell(r.serverCpuMicrosPerTask)} | ${r.latencyMs.p50} | ${r.latencyMs.p99} | ` +
          `${ph.publish} / ${ph.toFirst} / ${ph.tasks} / ${ph.tail} |`,
      );
    }
    const b = t.ratioToBullmq;
    lines.push(
      "",
      b
        ? `jetstate ÷ BullMQ (tasks/s): median of ratios ${b.medianOfRatios}, ratio of medians ${b.ratioOfMedians} (per rep ${b.perRep.join(", ")}). BullMQ's workers run jobs while they are added (its phases overlap).`
        : "BullMQ: not run (no Redis answered on loopback).",
    );
    lines.push("");
  }
  if (doc.connections) {
    const k = doc.connections;
    lines.push("## Connections", "");
    lines.push(`| job | open during the job (max of ${k.samples} polls) | accepted for the runtime | ok |`);
    lines.push("| --- | ---: | ---: | --- |");
    lines.push(
      `| ${k.tasks} tasks, ${k.workers} workers | ${k.maxOpenDuringJob} | ${k.acceptedForRuntime} | ${k.ok ? "yes" : "NO"} |`,
      "",
    );
  }
  if (doc.submitLatency) {
    lines.push(
      "## Submit latency (until committed)",
      "",
      "| tasks | median ms | each ms |",
      "| ---: | ---: | --- |",
    );
    for (const s of doc.submitLatency) lines.push(`| ${s.tasks} | ${s.medianMs} | ${s.ms.join(", ")} |`);
    lines.push("");
  }
  const small = doc.smallJobs;
  if (small) {
    const { jobs, inFlight, serial } = small.shape;
    lines.push(
      `## Small jobs: 1-task jobs (${jobs} with ${inFlight} in flight; ${serial} one at a time; medians)`,
      "",
      "| side | jobs/s in flight | CPU µs/job in flight: bench process, nats-server (BullMQ: redis-server) | submit p50 ms | submit → result p50 ms |",
      "| --- | ---: | ---: | ---: | ---: |",
    );
    for (const [name, side] of [
      ["jetstate, the lane (`jobs.lane`, the default since 0.3)", small.lane],
      ["jetstate, a consumer per job (`lane: false`)", small.jetstate],
      // Older result files have no memory side.
      ["jetstate, `lane: false, memoryConsumers: true`", small.memory ?? null],
      ["raw JetStream, the minimum", small.raw],
      ["BullMQ (Redis)", small.bullmq],
    ] as const) {
      if (side)
        lines.push(
          `| ${name} | ${side.jobsPerSec} | ${side.clientCpuMicrosPerJob}, ${side.serverCpuMicrosPerJob ?? "?"} | ${side.submitP50Ms} | ${side.roundTripP50Ms} |`,
        );
    }
    const ratio = (r: typeof small.ratioToRaw) => (r ? `${r.median} (per rep ${r.perRep.join(", ")})` : "–");
    lines.push(
      "",
      `jetstate with its defaults (the lane) ÷ raw (jobs/s in flight): ${ratio(small.laneRatioToRaw)}; ÷ BullMQ: ${ratio(small.laneRatioToBullmq)}.`,
      `With a consumer per job (\`lane: false\`): ÷ raw ${ratio(small.ratioToRaw)}; ÷ BullMQ: ${ratio(small.ratioToBullmq)}.`,
      "",
    );
  }
  /** Another way the many jobs ran, against the same one job; none in a result file without it. */
  const otherWay = (how: string, tasksPerSecond?: number[], ratio?: number, perRep?: number[]) =>
    tasksPerSecond
      ? [
          `${how}: many ${tasksPerSecond.join(", ")}; many ÷ one: ${ratio} (per rep ${perRep?.join(", ")}).`,
          "",
        ]
      : [];
  const many = doc.manyJobs;
  if (many) {
    const { jobs, tasksPerJob } = many.shape;
    lines.push(
      `## Many jobs: ${jobs} concurrent jobs of ${tasksPerJob} tasks against one of ${jobs * tasksPerJob}`,
      "",
      `tasks/s per rep: many ${many.many.join(", ")}; one ${many.one.join(", ")}. ` +
        `Many ÷ one: ${many.ratio} (per rep ${many.perRep.join(", ")}).`,
      "",
      // Older result files have no side with consumers of their own (their many jobs had them),
      // and the oldest no memory side.
      ...otherWay(
        "Each with a consumer of its own (`jobs.lane: false`)",
        many.manyOwn,
        many.ratioOwn,
        many.perRepOwn,
      ),
      ...otherWay(
        "With `jobs.memoryConsumers` (consumers of their own in the server's memory)",
        many.manyInMemory,
        many.ratioInMemory,
        many.perRepInMemory,
      ),
    );
  }
  const takeover = doc.takeover;
  if (takeover) {
    lines.push(
      `## Takeover with ${takeover.shape.records} finished job records kept`,
      "",
      `From the supervisor's SIGKILL to another runtime's first write of the job's lease ` +
        `(leaseMs ${takeover.shape.leaseMs}): ${takeover.takeoverMs.join(", ")} ms (median ${takeover.medianMs}). ` +
        `Idle, a supervising runtime up and no job running: CPU ms per second, bench process ` +
        `${takeover.idle.clientCpuMsPerSec}, nats-server ${takeover.idle.serverCpuMsPerSec ?? "?"}.`,
      "",
    );
  }
  const l = doc.list;
  if (l) {
    lines.push(
      `## Listing jobs: pages of 100 over ${l.records} stored records`,
      "",
      "| call | calls | p50 ms | p90 ms | max ms | jobs per page (median) |",
      "| --- | ---: | ---: | ---: | ---: | ---: |",
    );
    for (const [name, t] of [
      ["first page", l.firstPage],
      ["page from a random cursor", l.randomPages],
      ["first page, queue filter (1 in 10)", l.firstPageQueue],
      ["random cursor, queue filter (1 in 10)", l.randomPagesQueue],
    ] as const) {
      lines.push(`| ${name} | ${t.calls} | ${t.p50Ms} | ${t.p90Ms} | ${t.maxMs} | ${t.jobsPerPage} |`);
    }
    lines.push(
      "",
      `One full \`listRecords()\` of every record (how \`list()\` worked before pages): ${l.fullScanMs} ms. ` +
        `Consumers on the bucket's stream before the pages: ${l.consumersBefore}, after: ${l.consumersAfter}. ` +
        `Records written in ${l.writeSeconds} s.`,
      "",
    );
  }
  const f = doc.fairness;
  if (f) {
    lines.push(
      `## Fairness: 1-task jobs while a ${f.shape.bigTasks}-task job runs (concurrency ${f.shape.concurrency})`,
      "",
      `submit() → done() of each small job: p50 ${f.smallP50Ms} ms, p90 ${f.smallP90Ms} ms, max ${f.smallMaxMs} ms. ` +
        `The big job still had ${f.bigLeftAtLastSmall} tasks left when the last small one ended ` +
        `(it ran ${f.bigSeconds} s in all).`,
      "",
    );
  }
  if (doc.scheduling) lines.push(...schedulingMarkdown(doc.scheduling));
  const k = doc.cluster;
  if (k) {
    lines.push(`## 3-node cluster, streams at R${k.replicas} (medians)`, "");
    lines.push("| | tasks/s | s | latency p50 ms | latency p99 ms | ÷ the same side on one server |");
    lines.push("| --- | ---: | ---: | ---: | ---: | ---: |");
    lines.push(
      `| raw JetStream | ${k.raw.tasksPerSec} | ${k.raw.seconds} | ${k.raw.latencyP50Ms} | ${k.raw.latencyP99Ms} | ${cell(k.rawToSingle)} |`,
      `| jetstate | ${k.jetstate.tasksPerSec} | ${k.jetstate.seconds} | ${k.jetstate.latencyP50Ms} | ${k.jetstate.latencyP99Ms} | ${cell(k.jetstateToSingle)} |`,
      "",
      `jetstate ÷ raw on the cluster: median of ratios ${k.ratio.medianOfRatios}, ratio of medians ${k.ratio.ratioOfMedians} (per rep ${k.ratio.perRep.join(", ")}).`,
      "",
    );
  }
  if (doc.jobPlane) lines.push(...planeMarkdown(doc.jobPlane));
  const mem = doc.memory;
  if (mem) {
    lines.push(
      "## Memory (child processes, after gc)",
      "",
      `Measured on ${(mem.idleJobs as { measured?: string } | undefined)?.measured === "dist" ? "the package's build (`dist/`)" : "the sources through tsx (`JETSTATE_BENCH_SOURCES=1`; tsx adds ~9 KB per job)"}.`,
      "",
      "| case | RSS MiB | heap used MiB | note |",
      "| --- | ---: | ---: | --- |",
    );
    const big = mem.job100k as
      | { tasks: number; seconds: number; baseline: MemoryUsage; peak: MemoryUsage; after: MemoryUsage }
      | undefined;
    if (big) {
      lines.push(
        `| ${big.tasks}-task job: baseline | ${mib(big.baseline.rss)} | ${mib(big.baseline.heapUsed)} | runtime + payloads, before submit |`,
      );
      lines.push(
        `| ${big.tasks}-task job: peak | ${mib(big.peak.rss)} | ${mib(big.peak.heapUsed)} | sampled every 25 ms (heap not after gc) |`,
      );
      lines.push(
        `| ${big.tasks}-task job: after | ${mib(big.after.rss)} | ${mib(big.after.heapUsed)} | job done in ${big.seconds.toFixed(2)} s |`,
      );
    }
    const consumerLines: string[] = [];
    const idle = mem.idleJobs as
      | {
          jobs: number;
          baseline: MemoryUsage;
          after: MemoryUsage;
          perJob: { rss: number; heapUsed: number };
          consumers?: ConsumerCountsAt;
        }
      | undefined;
    if (idle) {
      lines.push(
        `| ${idle.jobs} idle jobs: baseline | ${mib(idle.baseline.rss)} | ${mib(idle.baseline.heapUsed)} | |`,
      );
      lines.push(
        `| ${idle.jobs} idle jobs: after | ${mib(idle.after.rss)} | ${mib(idle.after.heapUsed)} | |`,
      );
      lines.push(
        `| per idle job | ${(idle.perJob.rss / 1024).toFixed(1)} KiB | ${(idle.perJob.heapUsed / 1024).toFixed(1)} KiB | |`,
      );
      if (idle.consumers)
        consumerLines.push(
          `| ${idle.jobs + 1} jobs with a consumer of their own (the idle jobs, then run) | – | ${consumerCell(idle.consumers.live)} | ${consumerCell(idle.consumers.ended)} |`,
        );
    }
    const live = mem.liveJobs as
      | {
          jobs: number;
          submitSeconds: number;
          doneSeconds: number;
          ran: number;
          statuses: Record<string, number>;
          cpuSeconds: number;
          heapPerLiveJob: number;
          /** 2.5 s after the last submit (absent in documents before it). */
          heapPerLiveJobSettled?: number;
          live: MemoryUsage;
          consumers?: ConsumerCountsAt;
        }
      | undefined;
    if (live) {
      const ended = Object.entries(live.statuses)
        .map(([status, n]) => `${n} ${status}`)
        .join(", ");
      lines.push(
        `| ${live.jobs} live lane jobs, all submitted before a worker runs | ${mib(live.live.rss)} | ${mib(live.live.heapUsed)} | ` +
          `submitted in ${live.submitSeconds.toFixed(1)} s, run in ${live.doneSeconds.toFixed(1)} s: ${ended}, ${live.ran} tasks run; ` +
          `${((live.cpuSeconds / live.jobs) * 1000).toFixed(2)} ms of client CPU and ${(live.heapPerLiveJob / 1024).toFixed(1)} KiB of heap per job` +
          `${live.heapPerLiveJobSettled === undefined ? "" : ` (${(live.heapPerLiveJobSettled / 1024).toFixed(1)} KiB 2.5 s later, their commits written)`} |`,
      );
      if (live.consumers)
        consumerLines.push(
          `| ${live.jobs} live lane jobs | ${consumerCell(live.consumers.before)} | ${consumerCell(live.consumers.live)} | ${consumerCell(live.consumers.ended)} |`,
        );
    }
    lines.push("");
    if (consumerLines.length > 0)
      lines.push(
        "Server consumers, from nats-server's `/jsz`: the jobs' own (on the queue's tasks stream, its lane not counted) / every consumer on the server. Before the jobs, while all are live, once all ended (the runtime still up).",
        "",
        "| jobs | before | live | ended |",
        "| --- | ---: | ---: | ---: |",
        ...consumerLines,
        "",
      );
  }
  if (t) {
    const r = t.ratio;
    lines.push("## Ratio jetstate ÷ raw JetStream", "");
    const p = t.ratioToPipelined;
    lines.push(
      `For comparison, to raw JetStream published with jetstate's own technique: median of ratios ` +
        `${p.medianOfRatios}, ratio of medians ${p.ratioOfMedians} (per repetition ${p.perRep.join(", ")}).`,
      "",
    );
    lines.push(`To raw JetStream (js.publish), per repetition: ${r.perRep.join(", ")}`, "");
    lines.push(
      `**median of ratios ${r.medianOfRatios}, ratio of medians ${r.ratioOfMedians}** ` +
        `(target ≥ ${r.target}: ${r.met ? "met" : "NOT met"})`,
      "",
    );
  }
  if (doc.notes.length > 0) lines.push("## Notes", "", ...doc.notes.map((n) => `- ${n}`), "");
  return `${lines.join("\n")}`;
}
