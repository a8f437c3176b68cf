/**
 * The lane through the HTTP pull API, on both brokers (a real nats-server,
 * and the memory broker of `jetstate/testing`): lane jobs are reserved from
 * their queue, never by job id, a lane task of a job that is over is never
 * handed out, and a heartbeat extends a lane lease. The oracles are the
 * server's own view (its consumers and stored subjects, read with a
 * connection of the test's own on NATS, the memory server's state on
 * memory), the wire (the acks the server is sent) and the HTTP client's
 * ledger of what it was handed, never jetstate's view of itself.
 */

import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { memoryLaneName, memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { partsOf } from "../../src/api/runtime.ts";
import { planSubmit } from "../../src/effects/plan-submit.ts";
import type { JobHandle } from "../../src/index.ts";
import { encodeTask } from "../../src/kernel/wire.ts";
import { ManualClock } from "../../src/testing.ts";
import { useHttpBench } from "../harness/http-bench.ts";
import { memoryRawResults, natsRawResults, type RawResult, storedCount } from "../harness/raw-results.ts";
import { waitUntil } from "../harness/wait.ts";

const TOKEN = "token-lane-worker-0123456789";
const names = brokerNames("jetstate");
const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

interface Reserved {
  id: string;
  job_id: string;
  index: number;
  attempt: number;
  payload: { n: number };
  receipt: string;
  lease_ms: number;
}

interface Answer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field
  json: any;
}

describe.each(["nats", "memory"] as const)("the lane through the HTTP API on the %s broker", (broker) => {
  /** The memory server's clock: it moves only when the test says. */
  const clock = new ManualClock(Date.now());
  const bench = useHttpBench(broker, {
    tokens: { [TOKEN]: "lane-worker" },
    logger,
    clock,
    jobs: { lane: true },
  });
  /** The HTTP client's ledger: every task any reserve of this file was handed. */
  const handed: Reserved[] = [];

  const post = async (path: string, body: unknown): Promise<Answer> => {
    const response = await fetch(`${bench.http.baseUrl}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: response.status, json: await response.json() };
  };

  /** One reserve from the queue; what it hands out goes to the ledger. */
  const reserveFromQueue = async (queue: string, batchSize: number): Promise<Reserved[]> => {
    const answer = await post(`/queues/${queue}/tasks`, { batch_size: batchSize });
    expect(answer.status, JSON.stringify(answer.json)).toBe(200);
    handed.push(...answer.json.tasks);
    return answer.json.tasks;
  };

  /** Reserves from the queue until `until` says the ledger holds what it waits for. */
  const reserveUntil = async (queue: string, until: () => boolean, message: string) =>
    waitUntil(
      async () => {
        await reserveFromQueue(queue, 10);
        return until();
      },
      { timeoutMs: 10_000, intervalMs: 50, message },
    );

  const handedOf = (jobId: string) => handed.filter((t) => t.job_id === jobId);

  /** The consumers on the queue's tasks, as the server holds them (`lane` for the queue's lane). */
  const consumersOf = async (queue: string): Promise<string[]> => {
    if (bench.nc) {
      const jsm = await jetstreamManager(bench.nc);
      const found: string[] = [];
      for await (const c of jsm.consumers.list(names.tasksStream(queue))) found.push(c.name);
      return found.sort();
    }
    const tasks = memoryServerState(bench.memory!).tasks;
    const own = tasks
      .subjectConsumerNames()
      .filter((name) => tasks.consumer(name)?.subject.startsWith(names.tasksSubject(queue, "")));
    return [...own, ...(tasks.consumer(memoryLaneName(queue)) ? ["lane"] : [])].sort();
  };

  /** Task messages the server stores on a subject (a wildcard counts every subject under it). */
  const stored = async (queue: string, subject: string): Promise<number> => {
    if (!bench.nc) return memoryServerState(bench.memory!).tasks.count(subject);
    const jsm = await jetstreamManager(bench.nc);
    if (!subject.endsWith(">")) return storedCount(jsm, names.tasksStream(queue), subject);
    const info = await jsm.streams.info(names.tasksStream(queue), { subjects_filter: subject });
    return Object.values(info.state.subjects ?? {}).reduce((sum, n) => sum + n, 0);
  };

  /** A task message published straight to the server, past the runtime. */
  const rawPublish = async (subject: string, body: string) => {
    if (bench.nc) await jetstream(bench.nc).publish(subject, body);
    else memoryServerState(bench.memory!).tasks.publish(subject, body, `raw.${subject}`);
  };

  const rawResults = async (queue: string, jobId: string): Promise<RawResult[]> =>
    bench.nc ? natsRawResults(bench.nc, queue, jobId) : memoryRawResults(bench.memory!, queue, jobId);

  const firstResult = async <R>(job: JobHandle<R>) => {
    for await (const r of job.results()) return r.ok ? r.result : r.error;
  };

  const answer = (task: Reserved, result: unknown) =>
    post(`/jobs/${task.job_id}/results`, { results: [{ receipt: task.receipt, result }] });

  it("runs one-task jobs reserved from their queue, each task handed out once, with no consumer per job", async () => {
    const queue = "hl_run";
    const jobs = await Promise.all(
      Array.from({ length: 20 }, (_, n) =>
        bench.rt.jobs.submit<{ n: number }, number>({ queue, tasks: [{ n }] }),
      ),
    );
    // Before any worker came: the lane, and no consumer of any job's own.
    expect(await consumersOf(queue)).toEqual(["lane"]);
    expect(await stored(queue, names.laneFilter(queue))).toBe(20);
    const ids = new Set(jobs.map((j) => j.id));
    const ofTheseJobs = () => handed.filter((t) => ids.has(t.job_id));
    await reserveUntil(
      queue,
      () => new Set(ofTheseJobs().map((t) => t.job_id)).size === jobs.length,
      "every lane job's task handed out",
    );
    // Each task handed out once, by the client's ledger.
    expect(
      ofTheseJobs()
        .map((t) => [t.job_id, t.index, t.attempt])
        .sort(),
    ).toEqual(jobs.map((j) => [j.id, 0, 1]).sort());
    for (const task of ofTheseJobs()) {
      const answered = await answer(task, task.payload.n * 2);
      expect(answered.json).toEqual({ results: [{ id: task.id, status: "done" }] });
    }
    const ends = await Promise.all(jobs.map((j) => j.done()));
    expect(ends.map((e) => [e.status, e.done, e.total])).toEqual(jobs.map(() => ["succeeded", 1, 1]));
    // Each answer stored once, by the server's count; and still nothing handed out twice.
    expect(ofTheseJobs()).toHaveLength(jobs.length);
    for (const job of jobs) expect((await rawResults(queue, job.id)).map((e) => e.i)).toEqual([0]);
    // Each naming the submit its task was leased under: no later submit of a key counts it.
    for (const job of jobs) {
      const submit = (await bench.rt.jobs.record(job.id))?.submitId;
      expect((await rawResults(queue, job.id)).map((e) => e.s)).toEqual([submit]);
    }
    expect(await Promise.all(jobs.map(firstResult))).toEqual(jobs.map((_, n) => n * 2));
    expect(await stored(queue, names.laneFilter(queue))).toBe(0);
    expect(await consumersOf(queue)).toEqual(["lane"]);
  });

  it("a lane job is not reserved by its id: 409 job_in_lane, naming its queue; its task stays", async () => {
    const queue = "hl_byid";
    const job = await bench.rt.jobs.submit<{ n: number }, number>({ queue, tasks: [{ n: 5 }] });
    const refused = await post(`/jobs/${job.id}/tasks`, { batch_size: 1 });
    expect(refused.status).toBe(409);
    expect(refused.json.error).toMatchObject({ code: "job_in_lane", queue });
    expect(await stored(queue, names.laneSubject(queue, job.id))).toBe(1);
    await reserveUntil(queue, () => handedOf(job.id).length > 0, "the lane job's task handed out");
    await answer(handedOf(job.id)[0]!, 10);
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
    expect(handedOf(job.id)).toHaveLength(1);
  });

  it("a lane task of a job whose commit is not written yet is handed back, not out; once committed, each is handed out once", async () => {
    const queue = "hl_uncommitted";
    const { broker } = partsOf(bench.rt);
    // A lane job of two tasks stopped between its publish and its commit, made through the port.
    const { record, bodies } = await planSubmit(
      { queue, tasks: [{ n: 1 }, { n: 2 }] },
      1 << 20,
      Date.now(),
      true,
    );
    expect(record).toMatchObject({ lane: true, phase: "submitting" });
    const revision = await broker.createRecord(record);
    await broker.publishTasks(record, bodies, new AbortController().signal);
    // A live lane job behind it, so the queue's lane is asked.
    const live = await bench.rt.jobs.submit<{ n: number }, number>({ queue, tasks: [{ n: 3 }] });
    await reserveUntil(queue, () => handedOf(live.id).length > 0, "the live lane job's task handed out");
    await reserveFromQueue(queue, 10);
    expect(handedOf(record.id)).toEqual([]);
    expect(await stored(queue, names.laneSubject(queue, record.id))).toBe(2);
    await broker.updateRecord({ ...record, phase: "committed", status: "running" }, revision);
    clock.advance(1000); // the memory server's redelivery of what went back
    await reserveUntil(queue, () => handedOf(record.id).length === 2, "the committed job's tasks handed out");
    expect(
      handedOf(record.id)
        .map((t) => t.index)
        .sort(),
    ).toEqual([0, 1]);
    await answer(handedOf(live.id)[0]!, 6);
    expect(await live.done()).toMatchObject({ status: "succeeded", done: 1 });
  });

  it("a lane task of a submit rolled back, still stored when the next submit of the key commits, is never handed out; the next one's each once", async () => {
    const queue = "hl_other_submit";
    const { broker } = partsOf(bench.rt);
    const never = new AbortController().signal;
    // Two submits of one key, made through the port. Their payloads differ (a real resubmit's are
    // the same) only so the ledger tells whose task was handed out.
    const plan = (n: number) =>
      planSubmit(
        { queue, tasks: [{ n }, { n: n + 1 }], idempotencyKey: "one-key" },
        1 << 20,
        Date.now(),
        true,
      );
    const first = await plan(10);
    const next = await plan(20);
    expect(next.record).toMatchObject({ id: first.record.id, lane: true });
    const created = await broker.createRecord(first.record);
    await broker.publishTasks(first.record, first.bodies, never);
    // Rolled back, its tasks not removed yet (a rollback marks the record first); the next submit
    // takes the record over, publishes its own tasks and commits.
    const marked = await broker.updateRecord(
      { ...first.record, phase: "rolledBack", status: "failed" },
      created,
    );
    const taken = await broker.updateRecord(next.record, marked);
    await broker.publishTasks(next.record, next.bodies, never);
    await broker.updateRecord({ ...next.record, phase: "committed", status: "running" }, taken);
    const subject = names.laneSubject(queue, first.record.id);
    expect(await stored(queue, subject)).toBe(4);
    // A live lane job behind them, so the queue's lane is asked.
    const live = await bench.rt.jobs.submit<{ n: number }, number>({ queue, tasks: [{ n: 3 }] });
    await reserveUntil(queue, () => handedOf(live.id).length > 0, "the live lane job's task handed out");
    await reserveUntil(
      queue,
      () => handedOf(next.record.id).length >= 2,
      "the next submit's tasks handed out",
    );
    expect(
      handedOf(next.record.id)
        .map((t) => t.payload.n)
        .sort(),
    ).toEqual([20, 21]);
    // The first submit's two were termed, not handed out: only the next one's are left.
    await waitUntil(async () => (await stored(queue, subject)) === 2, {
      timeoutMs: 5000,
      message: "the first submit's tasks removed",
    });
    expect(handedOf(next.record.id)).toHaveLength(2);
    await answer(handedOf(live.id)[0]!, 6);
    expect(await live.done()).toMatchObject({ status: "succeeded", done: 1 });
  });

  it("a lane task whose job is over is never handed out: deleted by the cancel, termed if it comes back", async () => {
    const queue = "hl_over";
    const cancelled = await bench.rt.jobs.submit<{ n: number }, number>({ queue, tasks: [{ n: 1 }] });
    const subject = names.laneSubject(queue, cancelled.id);
    expect(await stored(queue, subject)).toBe(1);
    await cancelled.cancel("not wanted");
    expect(await stored(queue, subject)).toBe(0);
    // A live lane job, so the queue's lane is asked; then the cancelled job's task lands again
    // (a publish that outlived its job), behind the live one.
    const live = await bench.rt.jobs.submit<{ n: number }, number>({ queue, tasks: [{ n: 2 }] });
    await rawPublish(subject, encodeTask(0, { n: 1 }));
    expect(await stored(queue, subject)).toBe(1);
    await reserveUntil(queue, () => handedOf(live.id).length > 0, "the live lane job's task handed out");
    // The next reserve: whatever the lane still had of the over job was termed, not handed out.
    await reserveFromQueue(queue, 10);
    expect(handedOf(cancelled.id)).toEqual([]);
    await waitUntil(async () => (await stored(queue, subject)) === 0, {
      timeoutMs: 5000,
      message: "the over job's lane task removed",
    });
    await answer(handedOf(live.id)[0]!, 4);
    expect(await live.done()).toMatchObject({ status: "succeeded", done: 1 });
    expect((await cancelled.done()).status).toBe("failed");
    expect(handed.filter((t) => t.job_id === cancelled.id || t.job_id === live.id)).toHaveLength(1);
  });

  it("a heartbeat extends a lane lease: the server is told, and nobody else gets the task", async () => {
    const queue = "hl_beat";
    const job = await bench.rt.jobs.submit<{ n: number }, string>({ queue, tasks: [{ n: 0 }] });
    await reserveUntil(queue, () => handedOf(job.id).length > 0, "the lane job's task handed out");
    const [task] = handedOf(job.id);
    // The delivery the receipt names (its claims are the client's to read).
    const ref: string = JSON.parse(Buffer.from(task!.receipt.split(".")[0]!, "base64url").toString()).r;
    const acks: string[] = [];
    const sub = bench.nc?.subscribe(`$JS.ACK.${names.tasksStream(queue)}.lane.>`, {
      callback: (_error, m) => {
        acks.push(`${m.subject} ${m.string()}`);
      },
    });
    await bench.nc?.flush();
    // Memory: two thirds of the lane's 30 s ack wait pass before the heartbeat, as many after it.
    clock.advance(20_000);
    const beat = await post(`/jobs/${job.id}/heartbeat`, { receipts: [task!.receipt] });
    expect(beat.status).toBe(200);
    expect(beat.json.receipts).toEqual([
      { id: `${job.id}.0`, status: "extended", receipt: expect.any(String), lease_ms: expect.any(Number) },
    ]);
    clock.advance(20_000);
    if (bench.nc) {
      // NATS: the server was told the delivery is being worked on (+WPI restarts its ack wait).
      await waitUntil(() => acks.length > 0, { timeoutMs: 5000, message: "the working ack sent" });
      expect(acks).toEqual([`${ref} +WPI`]);
      sub?.unsubscribe();
    }
    // Past the first lease's end on memory: the task is not offered to anyone else.
    expect(await reserveFromQueue(queue, 10)).toEqual([]);
    const done = await post(`/jobs/${job.id}/results`, {
      results: [{ receipt: beat.json.receipts[0].receipt, result: "kept" }],
    });
    expect(done.json).toEqual({ results: [{ id: `${job.id}.0`, status: "done" }] });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
    expect(await firstResult(job)).toBe("kept");
    expect(handedOf(job.id)).toHaveLength(1);
  });
});
