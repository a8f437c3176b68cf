/** What one throughput run reports, for raw JetStream and for jetstate alike. */
import { median, percentiles, round } from "./stats.ts";

export interface ThroughputRun {
  readonly kind: "raw" | "raw-pipelined" | "jetstate" | "bullmq";
  readonly rep: number;
  readonly n: number;
  readonly seconds: number;
  readonly tasksPerSec: number;
  /** Time the publishes (raw) or the submit (jetstate) took, included in `seconds`. */
  readonly publishSeconds: number;
  /** Client CPU (user + system, whole process) per task, in microseconds. */
  readonly cpuMicrosPerTask: number;
  /** The part of it spent until the publishes / the submit ended. */
  readonly publishCpuMicrosPerTask: number;
  /** nats-server CPU per task in the same window, in microseconds (null where it cannot be read). */
  readonly serverCpuMicrosPerTask: number | null;
  /** Per task: the moment it was handed to the consumer / handler minus the start, ms. */
  readonly latencyMs: { readonly p50: number; readonly p99: number };
  /**
   * Where the time went, ms: publish/submit; from its end to the first task
   * seen; first to last task seen; last task seen to the end.
   */
  readonly phasesMs: {
    readonly publish: number;
    readonly toFirst: number;
    readonly tasks: number;
    readonly tail: number;
  };
}

/** Splits a run's time into phases from the per-task "seen at" times (ms after the start, -1 = unseen). */
export const phases = (
  seenAt: Float64Array,
  publishMs: number,
  totalMs: number,
): ThroughputRun["phasesMs"] => {
  let first = Number.POSITIVE_INFINITY;
  let last = 0;
  for (const t of seenAt) {
    if (t < 0) continue;
    if (t < first) first = t;
    if (t > last) last = t;
  }
  return {
    publish: round(publishMs, 1),
    toFirst: round(first - publishMs, 1),
    tasks: round(last - first, 1),
    tail: round(totalMs - last, 1),
  };
};

/** What a run measured, in ms from `performance.now()` and µs of CPU, before it is reported per task. */
export interface RunTimes {
  readonly started: number;
  /** The publishes (raw), the submit (jetstate), the adds (BullMQ) ended. */
  readonly published: number;
  readonly ended: number;
  /** Client CPU until `published`, and until `ended`. */
  readonly publishCpuMicros: number;
  readonly cpuMicros: number;
  readonly serverCpuMicros: number | undefined;
  /** Per task: when the consumer or handler saw it, ms after `started` (-1 = unseen). */
  readonly seenAt: Float64Array;
}

/** One run's report from what it measured. */
export const throughputRun = (
  kind: ThroughputRun["kind"],
  rep: number,
  n: number,
  t: RunTimes,
): ThroughputRun => {
  const seconds = (t.ended - t.started) / 1000;
  const [p50, p99] = percentiles(t.seenAt, [50, 99]);
  return {
    kind,
    rep,
    n,
    seconds: round(seconds, 3),
    tasksPerSec: Math.round(n / seconds),
    publishSeconds: round((t.published - t.started) / 1000, 3),
    cpuMicrosPerTask: round(t.cpuMicros / n, 1),
    publishCpuMicrosPerTask: round(t.publishCpuMicros / n, 1),
    serverCpuMicrosPerTask: perTask(t.serverCpuMicros, n),
    latencyMs: { p50: round(p50!, 1), p99: round(p99!, 1) },
    phasesMs: phases(t.seenAt, t.published - t.started, t.ended - t.started),
  };
};

/**
 * For profile.ts: called at the phase boundaries of a run (before the start,
 * after the publishes / the commit, after the end).
 */
export interface RunHooks {
  readonly started?: () => void | Promise<void>;
  readonly committed?: () => void | Promise<void>;
  readonly ended?: () => void | Promise<void>;
}

/** What a throughput run needs; `serverCpu` and `hooks` are optional. */
export interface RunOptions {
  /** A server URL, or several comma-separated (a cluster). */
  readonly url: string;
  /** Replicas of the streams the run makes (default 1; 3 on the 3-node cluster). */
  readonly replicas?: number;
  readonly n: number;
  /** Repetition number, for names and the report (-1: warm-up). */
  readonly rep: number;
  readonly serverCpu?: CpuClock;
  readonly hooks?: RunHooks;
}

/** Reads the server's CPU time in µs; see lib/server.ts. */
export type CpuClock = (() => number) | undefined;

export const perTask = (micros: number | undefined, n: number): number | null =>
  micros === undefined ? null : round(micros / n, 1);

export interface SideSummary {
  readonly tasksPerSec: number;
  readonly seconds: number;
  readonly publishSeconds: number;
  readonly cpuMicrosPerTask: number;
  readonly publishCpuMicrosPerTask: number;
  readonly serverCpuMicrosPerTask: number | null;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
}

export interface RatioSummary {
  /** jetstate tasks/s ÷ raw tasks/s, per repetition (raw and jetstate of the same round). */
  readonly perRep: readonly number[];
  readonly medianOfRatios: number;
  /** median jetstate tasks/s ÷ median raw tasks/s. */
  readonly ratioOfMedians: number;
  readonly target: number;
  readonly met: boolean;
}

const medianOf = (
  runs: readonly ThroughputRun[],
  pick: (run: ThroughputRun) => number | null,
): number | null => {
  const values = runs.map(pick).filter((v): v is number => v !== null);
  return values.length === 0 ? null : median(values);
};

/** Medians of every figure across the repetitions of one side. */
export const summarise = (runs: readonly ThroughputRun[]): SideSummary => ({
  tasksPerSec: Math.round(medianOf(runs, (r) => r.tasksPerSec)!),
  seconds: round(medianOf(runs, (r) => r.seconds)!, 3),
  publishSeconds: round(medianOf(runs, (r) => r.publishSeconds)!, 3),
  cpuMicrosPerTask: round(medianOf(runs, (r) => r.cpuMicrosPerTask)!, 1),
  publishCpuMicrosPerTask: round(medianOf(runs, (r) => r.publishCpuMicrosPerTask)!, 1),
  serverCpuMicrosPerTask: ((v) => (v === null ? null : round(v, 1)))(
    medianOf(runs, (r) => r.serverCpuMicrosPerTask),
  ),
  latencyP50Ms: round(medianOf(runs, (r) => r.latencyMs.p50)!, 1),
  latencyP99Ms: round(medianOf(runs, (r) => r.latencyMs.p99)!, 1),
});

export const ratios = (
  raw: readonly ThroughputRun[],
  jetstate: readonly ThroughputRun[],
  target: number,
): RatioSummary => {
  const perRep = jetstate.map((j, k) => round(j.tasksPerSec / raw[k]!.tasksPerSec, 3));
  const medianOfRatios = round(median(perRep), 3);
  const ratioOfMedians = round(summarise(jetstate).tasksPerSec / summarise(raw).tasksPerSec, 3);
  return {
    perRep,
    medianOfRatios,
    ratioOfMedians,
    target,
    met: Math.min(medianOfRatios, ratioOfMedians) >= target,
  };
};
