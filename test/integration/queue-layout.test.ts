import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobHandle } from "../../src/api/job-handle.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { requestsOf } from "../harness/api-requests.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsRawResults } from "../harness/raw-results.ts";
import { waitUntil } from "../harness/wait.ts";

/**
 * The layout NATS permissions are written against (src/adapters/names.ts),
 * read raw from the server, never through jetstate: each queue's tasks in a
 * stream of its own, each queue's MAX_DELIVERIES advisories in one of its
 * own, results and dead letters under subjects that name the queue. A
 * permission generator relies on exactly these names.
 */

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const prefix = "lay";
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

const within = <T>(promise: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([
    promise,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms),
    ),
  ]);

/** Messages stored per subject in a stream (subjects with none are not listed). */
const subjectsOf = async (jsm: JetStreamManager, stream: string, filter: string) =>
  (await jsm.streams.info(stream, { subjects_filter: filter })).state.subjects ?? {};

const streamNames = async (jsm: JetStreamManager) => {
  const names: string[] = [];
  for await (const name of jsm.streams.names()) names.push(name);
  return names.sort();
};

describe("stream and subject layout: per queue", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const runtimes: Runtime[] = [];
  const runtime = async (name: string) => {
    const rt = await createRuntime({
      servers: server.url,
      logger,
      prefix,
      name,
      jobs: { leaseMs: 1000, cleanupIntervalMs: 0 },
    });
    runtimes.push(rt);
    return rt;
  };
  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
    jsm = await jetstreamManager(nc);
  });
  afterAll(async () => {
    for (const rt of runtimes) await rt.stop();
    await nc?.close();
    await server?.dispose();
  });

  it("two queues on one runtime: tasks, advisories, results and dead letters each under their queue", async () => {
    const rt = await runtime("two-queues");
    const a = await rt.jobs.submit({
      queue: "A",
      tasks: range(4),
      maxDeliver: 2,
      ackWaitMs: 300,
      maxFailures: 0.5,
    });
    const b = await rt.jobs.submit({
      queue: "B",
      tasks: range(3),
      maxDeliver: 2,
      ackWaitMs: 300,
      maxFailures: 0.5,
    });

    // Committed, nobody pulling yet: each queue's tasks in its own stream, nothing anywhere else.
    expect(await streamNames(jsm)).toEqual([
      "KV_lay_jobs",
      "KV_lay_leases",
      "lay_advisories_A",
      "lay_advisories_B",
      "lay_dead",
      "lay_results",
      "lay_tasks_A",
      "lay_tasks_B",
    ]);
    expect(await subjectsOf(jsm, "lay_tasks_A", "lay.>")).toEqual({ [`lay.tasks.A.${a.id}`]: 4 });
    expect(await subjectsOf(jsm, "lay_tasks_B", "lay.>")).toEqual({ [`lay.tasks.B.${b.id}`]: 3 });
    for (const [queue, job, total] of [
      ["A", a, 4],
      ["B", b, 3],
    ] as const) {
      const tasks = await jsm.streams.info(`lay_tasks_${queue}`);
      expect(tasks.config.subjects).toEqual([`lay.tasks.${queue}.>`]);
      expect(tasks.state).toMatchObject({ messages: total, consumer_count: 1 });
      expect((await jsm.consumers.info(`lay_tasks_${queue}`, job.id)).num_pending).toBe(total);
      const advisories = await jsm.streams.info(`lay_advisories_${queue}`);
      expect(advisories.config.subjects).toEqual([
        `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.lay_tasks_${queue}.*`,
      ]);
      expect(advisories.state.consumer_count).toBe(1);
    }

    // Task 1 of each job hangs on both deliveries (no heartbeat past maxTaskMs): exhausted,
    // caught from its queue's advisory; the others are answered.
    const workers = ["A", "B"].map((queue) =>
      rt.workers.start<number, string>({
        queue,
        concurrency: 4,
        stopTimeoutMs: 100,
        maxTaskMs: 300,
        handler: (task, ctx) =>
          task.index === 1
            ? new Promise((_, reject) =>
                ctx.signal.addEventListener("abort", () => reject(new Error("aborted"))),
              )
            : `${queue}:${task.index}`,
      }),
    );
    const [endA, endB] = await within(Promise.all([a.done(), b.done()]), 20_000, "both jobs end");
    await Promise.all(workers.map((w) => w.stop()));
    expect(endA).toMatchObject({ status: "succeeded", total: 4, done: 3, failed: 0, dead: 1 });
    expect(endB).toMatchObject({ status: "succeeded", total: 3, done: 2, failed: 0, dead: 1 });

    // Dead letters: one per job, under its queue, with the queue in the letter.
    expect(await subjectsOf(jsm, "lay_dead", "lay.>")).toEqual({
      [`lay.dead.A.${a.id}`]: 1,
      [`lay.dead.B.${b.id}`]: 1,
    });
    expect(await rt.jobs.deadLetters(a.id)).toMatchObject([
      { queue: "A", jobId: a.id, index: 1, deliveries: 2, source: "advisory" },
    ]);
    expect(await rt.jobs.deadLetters(b.id)).toMatchObject([
      { queue: "B", jobId: b.id, index: 1, deliveries: 2, source: "advisory" },
    ]);
    // Each advisory went to its queue's stream, and was processed (a work queue: nothing left).
    for (const queue of ["A", "B"]) {
      const advisories = await jsm.streams.info(`lay_advisories_${queue}`);
      expect(advisories.state).toMatchObject({ messages: 0, last_seq: 1 });
    }

    // Results: under each job's queue only, every answer as stored (the dead one included).
    const results = await subjectsOf(jsm, "lay_results", "lay.>");
    expect(Object.keys(results).sort()).toEqual([`lay.results.A.${a.id}`, `lay.results.B.${b.id}`].sort());
    const answers = async (job: JobHandle) =>
      (await natsRawResults(nc, job.queue, job.id, prefix))
        .map((e) => [e.i, e.ok ? "ok" : e.dead ? "dead" : "failed"])
        .sort((x, y) => Number(x[0]) - Number(y[0]));
    expect(await answers(a)).toEqual([
      [0, "ok"],
      [1, "dead"],
      [2, "ok"],
      [3, "ok"],
    ]);
    expect(await answers(b)).toEqual([
      [0, "ok"],
      [1, "dead"],
      [2, "ok"],
    ]);

    // The jobs are over: their tasks streams hold nothing, their consumers are gone.
    for (const queue of ["A", "B"]) {
      expect((await jsm.streams.info(`lay_tasks_${queue}`)).state).toMatchObject({
        messages: 0,
        consumer_count: 0,
      });
    }
  });

  it("a queue set up by another runtime is found by listing: its exhausted task still becomes a dead letter", async () => {
    // This runtime never uses queue C: it can learn of it only from the server's stream list.
    const watcher = await runtime("watcher");
    const submitter = await runtime("submitter");
    const job = await submitter.jobs.submit({ queue: "C", tasks: range(1), maxDeliver: 1, ackWaitMs: 200 });
    const { id } = job;
    // Gone before the task exhausts: the watcher processes the advisory, and takes the job over.
    await submitter.stop();

    // A raw client takes the task and never answers; it keeps pulling, so the server notices.
    const consumer = await jetstream(nc).consumers.get("lay_tasks_C", id);
    const first = await consumer.fetch({ max_messages: 1, expires: 2000 });
    let taken = 0;
    for await (const _ of first) taken++;
    expect(taken).toBe(1);
    const pulling = await consumer.consume({ max_messages: 1, expires: 1000 });
    void (async () => {
      for await (const m of pulling) m.ack();
    })();
    try {
      await waitUntil(
        async () => (await subjectsOf(jsm, "lay_dead", "lay.dead.C.>"))[`lay.dead.C.${id}`] === 1,
        { timeoutMs: 20_000, intervalMs: 100, message: "the dead letter of queue C's task" },
      );
    } finally {
      await pulling.close();
    }
    const watched = await watcher.jobs.get(id);
    const end = await within(watched?.done() ?? Promise.reject(new Error("no job")), 10_000, "the job ends");
    expect(end).toMatchObject({ status: "failed", total: 1, done: 0, failed: 0, dead: 1 });
    expect(await subjectsOf(jsm, "lay_results", "lay.results.C.>")).toEqual({ [`lay.results.C.${id}`]: 1 });
    expect((await jsm.streams.info("lay_advisories_C")).state).toMatchObject({ messages: 0, last_seq: 1 });
  });

  it("a queue whose advisories stream is deleted: its dead-letter loop ends once, logged, and is not retried", async () => {
    const logged: Array<Record<string, unknown>> = [];
    const name = "loop-ends";
    const rt = await createRuntime({
      servers: server.url,
      prefix,
      name,
      logger: pino({ level: "info" }, { write: (line: string) => void logged.push(JSON.parse(line)) }),
      jobs: { cleanupIntervalMs: 0 },
    });
    runtimes.push(rt);
    const worker = rt.workers.start<number, number>({ queue: "D", handler: (t) => t.payload });
    await (await rt.jobs.submit({ queue: "D", tasks: [1] })).done();
    await worker.stop();
    // The runtime's discovery passes (each lists the streams), as they reach the server.
    const listings = await requestsOf(server.url, server.monitorUrl, name, "$JS.API.STREAM.NAMES");
    try {
      await jsm.streams.delete("lay_advisories_D");
      const ended = (l: Record<string, unknown>) =>
        l.queue === "D" && String(l.msg).includes("advisories stream is gone");
      await waitUntil(() => logged.some(ended), { timeoutMs: 10_000, message: "the loop of queue D to end" });
      // Past a whole discovery pass begun after the end (the second listing from now comes once the
      // first was acted on and its 5 s pause is over, longer than the loop's restart pauses): ended
      // once, never failing and restarting. A discovery that started the loop again, or a failing
      // restart, would show by then.
      const atEnd = listings.count();
      await waitUntil(() => listings.count() >= atEnd + 2, {
        timeoutMs: 20_000,
        intervalMs: 100,
        message: () => `two discovery passes after the end (${listings.count() - atEnd} seen)`,
      });
      expect(logged.filter(ended)).toHaveLength(1);
      expect(logged.filter((l) => l.loop === "dead-letters:D" && l.level === 40)).toEqual([]);
      // Not started again behind the logs' back either: a restart sets the queue's streams up again.
      expect(await streamNames(jsm)).not.toContain("lay_advisories_D");
    } finally {
      await listings.close();
    }
  });

  it("a dead-letter stream made by 0.2 (one subject token short) is refused with the command that fixes it", async () => {
    // 0.2 made `<prefix>_dead` on `<prefix>.dead.*`; jetstate never changes an existing stream.
    await jsm.streams.add({ name: "old_dead", subjects: ["old.dead.*"] });
    const rt = await createRuntime({
      servers: server.url,
      logger,
      prefix: "old",
      jobs: { cleanupIntervalMs: 0 },
    });
    runtimes.push(rt);
    await expect(rt.jobs.submit({ queue: "A", tasks: [1] })).rejects.toMatchObject({
      _tag: "PermanentBrokerError",
      message: expect.stringContaining("run `nats stream edit old_dead --subjects 'old.dead.>'`"),
    });
    expect((await rt.jobs.list()).jobs).toEqual([]);
  });
});
