/**
 * Queue limits for HTTP workers and per agent target (issue #19, item 4):
 * - HTTP pull: the time of one `POST /queues/{queue}/tasks` that leases one
 *   task, on a queue without limits and on one with `maxConcurrency` (the
 *   permit taken, then held), median and p95; the most leases held at once
 *   by HTTP and native workers together against the cap;
 * - per target: tasks per second through one worker bound to an agent, with
 *   no limit and with a per-target cap too large to bind (the cost of the
 *   target's permit), and the most handlers seen at once on one target
 *   under `perTarget.maxConcurrency: 2` with two workers (two agents) on it.
 * Figures from the bench's own ledger (timings, handler intervals).
 */
import type { Runtime } from "../src/index.ts";
import { maxOverlap } from "../test/harness/intervals.ts";
import { freshRuntime } from "./jetstate-e2e.ts";
import { createHttpApi } from "./lib/jetstate.ts";
import { round } from "./lib/stats.ts";
import { uniqueName } from "./lib/tasks.ts";

const token = "bench-limits-token-0123456789abcdef";
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const quantile = (values: readonly number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
};

export interface SchedLimitsResult {
  readonly httpPull: {
    readonly unlimitedMedianMs: number;
    readonly unlimitedP95Ms: number;
    readonly cappedMedianMs: number;
    readonly cappedP95Ms: number;
    readonly pulls: number;
  };
  readonly mixedCap: {
    readonly maxConcurrency: number;
    readonly maxOverlapSeen: number;
    readonly tasks: number;
  };
  readonly perTarget: {
    readonly unlimitedTasksPerSecond: number;
    readonly loosePerTargetTasksPerSecond: number;
    readonly cap: number;
    readonly maxOverlapOnTarget: number;
  };
}

/** Times `pulls` leases of one task each (answered at once), from a job of that many tasks. */
const timePulls = async (rt: Runtime, queue: string, pulls: number): Promise<number[]> => {
  const api = createHttpApi(rt, { tokens: { [token]: "bench" } });
  const post = async (path: string, body: unknown) =>
    (await (
      await api.fetch(
        new Request(`http://api${path}`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        }),
      )
    ).json()) as { tasks: Array<{ job_id: string; receipt: string }> };
  const job = await rt.jobs.submit({ queue, tasks: Array.from({ length: pulls }, (_, i) => i) });
  const times: number[] = [];
  let answered = 0;
  while (answered < pulls) {
    const t0 = now();
    const { tasks } = await post(`/queues/${queue}/tasks`, { batch_size: 1 });
    if (tasks.length === 0) continue;
    times.push(now() - t0);
    for (const t of tasks)
      await post(`/jobs/${t.job_id}/results`, { results: [{ receipt: t.receipt, result: 1 }] });
    answered += tasks.length;
  }
  await job.done();
  return times;
};

export async function measureSchedLimits(url: string): Promise<SchedLimitsResult> {
  // One runtime (its own prefix): its HTTP API, native workers and agents share the queues.
  const rt = await freshRuntime(url, "limits", 0);
  try {
    // HTTP pull, unlimited vs capped (the cap does not bind: one lease at a time).
    const pulls = 100;
    const open = uniqueName("open", 0);
    const capped = uniqueName("capped", 0);
    await rt.queues.configure(capped, { maxConcurrency: 10 });
    const unlimitedTimes = await timePulls(rt, open, pulls);
    const cappedTimes = await timePulls(rt, capped, pulls);

    // Native and HTTP workers against one cap.
    const mixed = uniqueName("mixed", 0);
    const cap = 3;
    await rt.queues.configure(mixed, { maxConcurrency: cap });
    const intervals: Array<{ start: number; end: number }> = [];
    const native = rt.workers.start({
      queue: mixed,
      concurrency: 4,
      handler: async () => {
        const start = now();
        await sleep(20);
        intervals.push({ start, end: now() });
        return 1;
      },
    });
    const api = createHttpApi(rt, { tokens: { [token]: "bench" } });
    const stop = new AbortController();
    const remote = Array.from({ length: 2 }, async () => {
      while (!stop.signal.aborted) {
        const res = await api.fetch(
          new Request(`http://api/queues/${mixed}/tasks`, {
            method: "POST",
            headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
            body: JSON.stringify({ batch_size: 2 }),
          }),
        );
        const { tasks } = (await res.json()) as { tasks: Array<{ job_id: string; receipt: string }> };
        const start = now();
        await Promise.all(
          tasks.map(async (t) => {
            await sleep(20);
            intervals.push({ start, end: now() });
            await api.fetch(
              new Request(`http://api/jobs/${t.job_id}/results`, {
                method: "POST",
                headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
                body: JSON.stringify({ results: [{ receipt: t.receipt, result: 1 }] }),
              }),
            );
          }),
        );
        if (tasks.length === 0) await sleep(5);
      }
    });
    const mixedTasks = 200;
    const mixedJob = await rt.jobs.submit({
      queue: mixed,
      tasks: Array.from({ length: mixedTasks }, (_, i) => i),
    });
    await mixedJob.done();
    stop.abort();
    await Promise.all(remote);
    await native.stop();

    // Per target: one bound worker, with no limit, then with a cap that never binds.
    const target = "https://bench.example/v1";
    await rt.agents.register({ agentId: "bench-agent", targets: [target], current: target });
    const throughput = async (queue: string) => {
      const worker = rt.workers.start({ queue, agent: "bench-agent", concurrency: 16, handler: () => 1 });
      const n = 2000;
      const t0 = now();
      const job = await rt.jobs.submit({ queue, tasks: Array.from({ length: n }, (_, i) => i) });
      await job.done();
      const perSecond = n / ((now() - t0) / 1000);
      await worker.stop();
      return perSecond;
    };
    const plain = uniqueName("plain", 0);
    const loose = uniqueName("loose", 0);
    await rt.queues.configure(loose, { perTarget: { maxConcurrency: 1000 } });
    const unlimitedTasksPerSecond = await throughput(plain);
    const loosePerTargetTasksPerSecond = await throughput(loose);

    // Two workers (bound to two agents) on one target, capped at 2.
    const tight = uniqueName("tight", 0);
    const perTargetCap = 2;
    await rt.queues.configure(tight, { perTarget: { maxConcurrency: perTargetCap } });
    await rt.agents.register({ agentId: "bench-agent-2", targets: [target], current: target });
    const onTarget: Array<{ start: number; end: number }> = [];
    const handler = async () => {
      const start = now();
      await sleep(10);
      onTarget.push({ start, end: now() });
      return 1;
    };
    const tw = [
      rt.workers.start({ queue: tight, agent: "bench-agent", concurrency: 8, handler }),
      rt.workers.start({ queue: tight, agent: "bench-agent-2", concurrency: 8, handler }),
    ];
    const tightJob = await rt.jobs.submit({ queue: tight, tasks: Array.from({ length: 100 }, (_, i) => i) });
    await tightJob.done();
    for (const w of tw) await w.stop();

    return {
      httpPull: {
        unlimitedMedianMs: round(quantile(unlimitedTimes, 0.5)),
        unlimitedP95Ms: round(quantile(unlimitedTimes, 0.95)),
        cappedMedianMs: round(quantile(cappedTimes, 0.5)),
        cappedP95Ms: round(quantile(cappedTimes, 0.95)),
        pulls,
      },
      mixedCap: { maxConcurrency: cap, maxOverlapSeen: maxOverlap(intervals), tasks: mixedTasks },
      perTarget: {
        unlimitedTasksPerSecond: round(unlimitedTasksPerSecond),
        loosePerTargetTasksPerSecond: round(loosePerTargetTasksPerSecond),
        cap: perTargetCap,
        maxOverlapOnTarget: maxOverlap(onTarget),
      },
    };
  } finally {
    await rt.stop();
  }
}
