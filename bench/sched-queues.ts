/**
 * Queue controls across 3 worker processes (issue #19, items 4 and 5):
 * - `ratePerSecond: 100` over 10 s: starts in each whole second from the
 *   first start (mean, min, max), and the most in any sliding 1-s window;
 * - `maxConcurrency: 5`: the most handlers seen running at once;
 * - pause: the last start on each process after `pause()` returned (ms;
 *   negative: its last start came before).
 * The figures come from the ledger the worker processes print
 * (bench/sched-queues-child.ts), not from jetstate's own counts.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { silent } from "./jetstate-e2e.ts";
import { createRuntime } from "./lib/jetstate.ts";
import { round } from "./lib/stats.ts";
import { uniqueName } from "./lib/tasks.ts";

interface Entry {
  readonly e: "s" | "x";
  readonly q: string;
  readonly i: number;
  readonly at: number;
}

interface WorkerProcess {
  readonly proc: ChildProcessWithoutNullStreams;
  readonly entries: Entry[];
  readonly ready: Promise<void>;
}

const startWorker = (url: string, prefix: string, queues: string[], concurrency: number): WorkerProcess => {
  const proc = spawn(
    process.execPath,
    ["--import", "tsx", "bench/sched-queues-child.ts", url, prefix, queues.join(","), String(concurrency)],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  const entries: Entry[] = [];
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => {
    markReady = resolve;
  });
  createInterface({ input: proc.stdout }).on("line", (text) => {
    const line = JSON.parse(text) as Entry | { e: "ready" };
    if (line.e === "ready") markReady();
    else entries.push(line as Entry);
  });
  return { proc, entries, ready };
};

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface SchedQueuesResult {
  readonly rate: {
    readonly ratePerSecond: number;
    readonly seconds: number;
    readonly meanPerSecond: number;
    readonly minPerSecond: number;
    readonly maxPerSecond: number;
    readonly maxInAnyWindow: number;
  };
  readonly concurrency: {
    readonly maxConcurrency: number;
    readonly maxOverlapSeen: number;
    readonly tasks: number;
  };
  readonly pause: { readonly lastStartAfterPauseMs: number[]; readonly startsAfterPause1s: number };
}

export async function measureSchedQueues(url: string): Promise<SchedQueuesResult> {
  const prefix = uniqueName("sq", 0);
  const admin = await createRuntime({ servers: url, prefix, logger: silent, name: "bench-queues-admin" });
  const [rated, capped, pausable] = ["rated", "capped", "pausable"] as const;
  const queues = [rated, capped, pausable];
  await admin.admin.provision(queues);
  const workers = [0, 1, 2].map(() => startWorker(url, prefix, queues, 20));
  try {
    await Promise.all(workers.map((w) => w.ready));
    const of = (q: string) => workers.flatMap((w) => w.entries.filter((e) => e.q === q));

    // Rate: 100 per second for 10 s, and 1.5 s more tasks than that so none runs short.
    const seconds = 10;
    await admin.queues.configure(rated, { ratePerSecond: 100 });
    const rateJob = await admin.jobs.submit({
      queue: rated,
      tasks: Array.from({ length: 1150 }, () => ({})),
    });
    await rateJob.done();
    const starts = of(rated)
      .filter((e) => e.e === "s")
      .map((e) => e.at)
      .sort((a, b) => a - b);
    const first = starts[0] ?? 0;
    const perSecond = Array.from(
      { length: seconds },
      (_, s) => starts.filter((t) => t >= first + s * 1000 && t < first + (s + 1) * 1000).length,
    );
    let maxInAnyWindow = 0;
    for (let i = 0, j = 0; i < starts.length; i++) {
      while (j < starts.length && (starts[j] as number) < (starts[i] as number) + 1000) j++;
      maxInAnyWindow = Math.max(maxInAnyWindow, j - i);
    }

    // Concurrency: 5 across 60 slots.
    await admin.queues.configure(capped, { maxConcurrency: 5 });
    const capTasks = 300;
    const capJob = await admin.jobs.submit({
      queue: capped,
      tasks: Array.from({ length: capTasks }, () => ({ ms: 10 })),
    });
    await capJob.done();
    const edges = of(capped).sort((a, b) => a.at - b.at || (a.e === "x" ? -1 : 1));
    let open = 0;
    let maxOverlapSeen = 0;
    for (const e of edges) {
      open += e.e === "s" ? 1 : -1;
      maxOverlapSeen = Math.max(maxOverlapSeen, open);
    }

    // Pause: a backlog running on every process, paused; starts after pause() returned.
    const pauseJob = await admin.jobs.submit({
      queue: pausable,
      tasks: Array.from({ length: 5000 }, () => ({ ms: 10 })),
    });
    while (of(pausable).length < 400) await sleep(20);
    await admin.queues.pause(pausable);
    const pausedAt = now();
    await sleep(3000);
    const lastStartAfterPauseMs = workers.map((w) => {
      const mine = w.entries.filter((e) => e.q === pausable && e.e === "s").map((e) => e.at);
      return round(Math.max(...mine) - pausedAt, 1);
    });
    const startsAfterPause1s = of(pausable).filter((e) => e.e === "s" && e.at > pausedAt + 1000).length;
    await admin.queues.resume(pausable);
    await pauseJob.cancel("bench over");

    const mean = perSecond.reduce((a, b) => a + b, 0) / seconds;
    return {
      rate: {
        ratePerSecond: 100,
        seconds,
        meanPerSecond: round(mean, 1),
        minPerSecond: Math.min(...perSecond),
        maxPerSecond: Math.max(...perSecond),
        maxInAnyWindow,
      },
      concurrency: { maxConcurrency: 5, maxOverlapSeen, tasks: capTasks },
      pause: { lastStartAfterPauseMs, startsAfterPause1s },
    };
  } finally {
    for (const w of workers) w.proc.stdin.write("stop\n");
    await Promise.all(
      workers.map((w) => Promise.race([new Promise((r) => w.proc.once("exit", r)), sleep(5000)])),
    );
    for (const w of workers) if (w.proc.exitCode === null) w.proc.kill("SIGKILL");
    await admin.stop();
  }
}
