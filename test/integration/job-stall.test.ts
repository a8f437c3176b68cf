/**
 * Stall detection (issue #5): a job with tasks left and nothing answered for
 * `stallAfterMs` goes `stalled`, says so in one warn line (how long, how many
 * tasks wait, how many a worker holds), goes back to `running` when answers
 * resume, and fails after `stalledTimeoutMs` when they never do. Short
 * thresholds, a real nats-server; every wait is for a state, with a deadline.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { JobHandle, JobSnapshot } from "../../src/api/job-handle.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { jobActorOf } from "../../src/api/runtime-job-handle.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { useNatsRuntime } from "../harness/runtime.ts";
import { waitUntil } from "../harness/wait.ts";

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly jobId?: string;
  readonly [key: string]: unknown;
}

/** Every line the runtime logs, parsed: pino writes one JSON line per call to `write`. */
const lines: LogLine[] = [];
const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
const warn = 40;

/** What the stall line carries besides its message. */
interface StallFields {
  readonly idleMs: number;
  readonly left: number;
  readonly waiting: number;
  readonly held: number;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const collect = async <R>(results: AsyncIterable<R>) => {
  const all: R[] = [];
  for await (const r of results) all.push(r);
  return all;
};

/** The statuses a job went through, in order, each once per visit. */
const trackStatuses = (job: JobHandle) => {
  const seen: string[] = [];
  const note = () => {
    const value = jobActorOf(job).getSnapshot().value;
    const status = typeof value === "string" ? value : Object.keys(value)[0]!;
    if (seen.at(-1) !== status) seen.push(status);
  };
  note();
  jobActorOf(job).subscribe(note);
  return seen;
};

/** Tasks of the job still in the tasks stream (a work queue: answered ones are gone). */
const tasksInStream = async (url: string, queue: string, jobId: string): Promise<number> => {
  const nc = await connect({ servers: url });
  try {
    const subject = `jetstate.tasks.${queue}.${jobId}`;
    const info = await (await jetstreamManager(nc)).streams.info(`jetstate_tasks_${queue}`, {
      subjects_filter: subject,
    });
    return info.state.subjects?.[subject] ?? 0;
  } finally {
    await nc.close();
  }
};

const stallLine = async (jobId: string): Promise<LogLine> => {
  const find = () => lines.find((l) => l.jobId === jobId && l.msg.startsWith("job stalled"));
  await waitUntil(() => find() !== undefined, { timeoutMs: 5000, message: `stall log line of ${jobId}` });
  return find()!;
};

describe("stalled jobs", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  useNatsRuntime({ logger }, (started) => {
    ({ server, rt } = started);
  });

  it("workers stopped mid-job → stalled, with a log line; workers back → running → succeeded", async () => {
    const total = 60;
    const handled = new Map<number, number>();
    const handler = async (task: { index: number; payload: number }) => {
      handled.set(task.index, (handled.get(task.index) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, 10));
      return task.payload * 2;
    };
    const first = rt.workers.start<number, number>({ queue: "stall", concurrency: 2, handler });
    const job = await rt.jobs.submit({
      queue: "stall",
      tasks: range(total),
      stallAfterMs: 300,
      // The stopping worker hands its unstarted tasks back (nak), but the server may deliver one
      // again to the worker's pull request, still open after it unsubscribed: such a task is
      // held by nobody until its lease runs out, then the restarted worker answers it.
      ackWaitMs: 1500,
    });
    const statuses = trackStatuses(job);
    await waitUntil(() => job.snapshot().done >= 10, { timeoutMs: 10_000, message: "10 tasks answered" });
    await first.stop();
    const doneAtStop = job.snapshot().done;
    expect(doneAtStop).toBeLessThan(total);

    await waitUntil(() => job.snapshot().status === "stalled", {
      timeoutMs: 5000,
      message: "stalled after 300 ms without an answer",
    });
    const stalled = job.snapshot();
    // The stopped worker's last batch of results may reach the job just after stop() returned
    // (they were stored before it did); nothing after that: the stall is on this count.
    expect(stalled.done).toBeGreaterThanOrEqual(doneAtStop);
    expect(stalled.done).toBeLessThan(total);
    const doneAtStall = stalled.done;
    expect(Date.now() - stalled.lastProgressAt).toBeGreaterThanOrEqual(300);

    const line = await stallLine(job.id);
    expect(line.level).toBe(warn);
    const { idleMs, left, waiting, held } = line as unknown as StallFields;
    expect(idleMs).toBeGreaterThanOrEqual(300);
    // Every task left either waits for a worker or is leased to one, counted once: the server's
    // own counts add a released task to both (nats-server 2.9), which the line must not repeat.
    expect(left).toBe(total - doneAtStall);
    expect(waiting + held).toBe(left);
    expect(await tasksInStream(server.url, "stall", job.id)).toBe(left);
    // Still leased: the tasks the stopped worker handed back, delivered again into its pull
    // request (still open on the server after it unsubscribed), and at most one pull's batch
    // (its concurrency, 2) of tasks never delivered before, delivered into that same request.
    expect(held).toBeLessThanOrEqual(first.stats().released + 2);
    // Said in words a person reads: 0.3 s, not "0 s" (nor raw milliseconds).
    const said = /no task answered for (\d+(?:\.\d)?) s;/.exec(line.msg);
    expect(said, line.msg).not.toBeNull();
    expect(Math.abs(Number(said![1]) * 1000 - idleMs)).toBeLessThanOrEqual(50);
    expect(line.msg).toContain(`${waiting} tasks wait, ${held} held by workers`);

    const second = rt.workers.start<number, number>({ queue: "stall", concurrency: 4, handler });
    const final = await job.done();
    await second.stop();
    expect(final).toMatchObject({ status: "succeeded", total, done: total, failed: 0, dead: 0 });
    // Stalled while stopped, running again with the new worker. It may stall once more near the
    // end, while a task released by the stopped worker waits out its lease (see ackWaitMs).
    expect(statuses.slice(0, 3)).toEqual(["running", "stalled", "running"]);
    expect(statuses.at(-1)).toBe("succeeded");
    expect(statuses.slice(3, -1).every((s) => s === "running" || s === "stalled")).toBe(true);
    const results = await collect(job.results());
    expect(results).toHaveLength(total);
    expect(new Set(results.map((r) => r.index)).size).toBe(total);
    expect(results.every((r) => r.ok && r.result === r.index * 2)).toBe(true);
    expect(handled.size).toBe(total);
    // The record says so too.
    const {
      jobs: [record],
    } = await rt.jobs.list({ queue: "stall" });
    expect(record).toMatchObject({ status: "succeeded", counts: { done: total, failed: 0, dead: 0 } });
  });

  it("stalled longer than stalledTimeoutMs → failed, with a reason naming the stall", async () => {
    const job = await rt.jobs.submit({
      queue: "nobody",
      tasks: range(5),
      stallAfterMs: 300,
      stalledTimeoutMs: 400,
      // Its own consumer's counts are in the stall line (a lane job's are the lane's).
      lane: false,
    });
    const statuses = trackStatuses(job);
    const final: JobSnapshot = await job.done();
    expect(final.status).toBe("failed");
    expect(final.reason).toMatch(/^stalled: no progress for \d+ ms with 5 tasks left$/);
    const idle = Number(/for (\d+) ms/.exec(final.reason!)![1]);
    expect(idle).toBeGreaterThanOrEqual(700); // stallAfterMs + stalledTimeoutMs
    expect(statuses).toEqual(["running", "stalled", "failed"]);
    // Nobody pulled: all five waited, none was held.
    const line = await stallLine(job.id);
    // And no worker was alive on its queue: the test started none there.
    expect(line).toMatchObject({ waiting: 5, held: 0, workersAlive: 0 });
    expect(line.msg).toContain(
      "5 tasks wait, 0 held by workers (no worker is pulling); 0 workers alive on queue nobody",
    );
    const {
      jobs: [record],
    } = await rt.jobs.list({ queue: "nobody" });
    expect(record).toMatchObject({ status: "failed", reason: final.reason });
    // The failed job's tasks are gone with its consumer.
    const nc = await connect({ servers: server.url });
    const jsm = await jetstreamManager(nc);
    await expect(jsm.consumers.info("jetstate_tasks_nobody", job.id)).rejects.toThrow(/not found/);
    await nc.close();
  });

  it("a worker that holds tasks but never answers (heartbeats): the stall line says a worker holds them", async () => {
    const total = 10;
    let started = 0;
    let heartbeats = 0;
    const hung = rt.workers.start<number, number>({
      queue: "hang",
      concurrency: 2,
      stopTimeoutMs: 50,
      handler: (_task, ctx) => {
        started++;
        const beat = setInterval(() => {
          heartbeats++;
          ctx.heartbeat();
        }, 100);
        return new Promise((_, reject) =>
          ctx.signal.addEventListener("abort", () => {
            clearInterval(beat);
            reject(new Error("aborted"));
          }),
        );
      },
    });
    // A lease far longer than the test: only the heartbeats matter here, not redelivery.
    const job = await rt.jobs.submit({ queue: "hang", tasks: range(total), stallAfterMs: 300, lane: false });
    await waitUntil(() => started === 2, { timeoutMs: 5000, message: "both handlers hold a task" });
    await waitUntil(() => job.snapshot().status === "stalled", { timeoutMs: 5000, message: "stalled" });
    const line = await stallLine(job.id);
    const { waiting, held } = line as unknown as StallFields;
    // The two tasks in its handlers at least (more, leased while it waited for a free slot).
    expect(held).toBeGreaterThanOrEqual(2);
    expect(waiting + held).toBe(total);
    expect(await tasksInStream(server.url, "hang", job.id)).toBe(total);
    expect(line.msg).toContain(
      `${held} held by workers (a worker holds tasks but answers none); 1 worker alive on queue hang`,
    );
    expect(line).toMatchObject({ workersAlive: 1 });
    expect(heartbeats).toBeGreaterThan(0);
    expect(job.snapshot().done).toBe(0);
    const final = await job.cancel("test over");
    expect(final).toMatchObject({ status: "failed", reason: "cancelled: test over" });
    await hung.stop();
  });
});
