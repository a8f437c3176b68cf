import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe("dead letters: a job never hangs on a task that exhausted its deliveries", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({ servers: server.url, logger });
    nc = await connect({ servers: server.url });
  });
  afterAll(async () => {
    await nc?.close();
    await rt?.stop();
    await server?.dispose();
  });

  it("a task that always fails transiently is dead after maxDeliver; redrive brings it back and it succeeds", async () => {
    let upstreamDown = true;
    const attempts: number[] = [];
    const worker = rt.workers.start<{ n: number }, number>({
      queue: "flaky",
      concurrency: 4,
      handler: (task) => {
        if (task.index === 2) {
          attempts.push(task.attempt);
          if (upstreamDown) throw new Error("upstream busy");
        }
        return task.payload.n * 10;
      },
    });
    const job = await rt.jobs.submit({
      queue: "flaky",
      tasks: range(5).map((n) => ({ n })),
      maxDeliver: 3,
      backoff: [20],
    });
    const first = await job.done();
    expect(first).toMatchObject({ status: "failed", done: 4, failed: 0, dead: 1 });
    expect(first.reason).toMatch(/1 of 5 tasks failed or died/);
    expect(attempts).toEqual([1, 2, 3]);

    const letters = await rt.jobs.deadLetters(job.id);
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({
      jobId: job.id,
      index: 2,
      taskId: `${job.id}.2`,
      payload: { n: 2 },
      deliveries: 3,
      source: "worker",
    });
    expect(letters[0]!.error).toMatch(/upstream busy/);

    upstreamDown = false;
    const again = await rt.jobs.redrive(job.id, [`${job.id}.2`]);
    const final = await again.done();
    await worker.stop();
    expect(final).toMatchObject({ status: "succeeded", done: 5, failed: 0, dead: 0 });
    expect(attempts.at(-1)).toBe(1); // a fresh delivery
    expect(await rt.jobs.deadLetters(job.id)).toEqual([]);
    const results = [];
    for await (const r of again.results()) results.push(r);
    expect(results).toHaveLength(5);
    expect(results.find((r) => r.index === 2)).toMatchObject({ ok: true, result: 20 });
    const {
      jobs: [record],
    } = await rt.jobs.list({ queue: "flaky" });
    expect(record).toMatchObject({ status: "succeeded", counts: { done: 5, failed: 0, dead: 0 } });
  });

  it("listing the letters of a job with many results messages reads them with no consumer left behind", async () => {
    // One task at a time, each answered in a results message of its own: 24 messages, more
    // than a reader takes one by one, so the listing catches up through a consumer of its own.
    const worker = rt.workers.start<number, number>({
      queue: "many-answers",
      concurrency: 1,
      // Work that takes a moment: each answer is sent alone, before the next task's.
      handler: async (task) => {
        await new Promise((resolve) => setTimeout(resolve, 15));
        if (task.index === 23) throw new Error("always");
        return task.payload;
      },
    });
    const job = await rt.jobs.submit({ queue: "many-answers", tasks: range(24), maxDeliver: 1 });
    expect(await job.done()).toMatchObject({ status: "failed", done: 23, dead: 1 });
    await worker.stop();
    const jsm = await jetstreamManager(nc);
    const stream = "jetstate_results";
    const subject = `jetstate.results.many-answers.${job.id}`;
    const stored =
      (await jsm.streams.info(stream, { subjects_filter: subject })).state.subjects?.[subject] ?? 0;
    expect(stored).toBeGreaterThan(8);
    const consumers = async () =>
      (await jsm.consumers.list(stream).next())
        .map((c) => `${c.name} ${c.config.filter_subject ?? ""} ${c.config.durable_name ?? ""}`)
        .sort();
    const before = await consumers();
    const letters = await rt.jobs.deadLetters(job.id);
    expect(letters.map((l) => l.index)).toEqual([23]);
    // The reader's own consumer deleted as it ends (its delete is sent, not awaited): well
    // before the 60 s after which a consumer left behind would expire by itself.
    await waitUntil(async () => JSON.stringify(await consumers()) === JSON.stringify(before), {
      timeoutMs: 5000,
      message: "the listing's results consumer deleted",
    });
  });

  it("a task that dies again after its redrive has a dead letter again, and can be redriven again", async () => {
    let upstreamDown = true;
    const ran: string[] = [];
    const worker = rt.workers.start<{ n: number }, number>({
      queue: "dies-twice",
      handler: (task) => {
        ran.push(`${task.attempt} ${upstreamDown ? "failed" : "ok"}`);
        if (upstreamDown) throw new Error("upstream busy");
        return task.payload.n;
      },
    });
    const job = await rt.jobs.submit({ queue: "dies-twice", tasks: [{ n: 7 }], maxDeliver: 2, backoff: [5] });
    expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
    expect(await rt.jobs.deadLetters(job.id)).toHaveLength(1);
    // Redriven while the upstream is still down: it dies again on its 2nd delivery, within the
    // dead-letter stream's 2-minute duplicate window. Before the fix its letter went under the same
    // message id as the first one's (job, task, delivery) and the server dropped it: no letter,
    // its payload gone, and a second redrive refused ("no dead letter").
    const again = await (await rt.jobs.redrive(job.id)).done();
    expect(again).toMatchObject({ status: "failed", dead: 1 });
    const letters = await rt.jobs.deadLetters(job.id);
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ index: 0, payload: { n: 7 }, deliveries: 2 });
    upstreamDown = false;
    expect(await (await rt.jobs.redrive(job.id)).done()).toMatchObject({
      status: "succeeded",
      done: 1,
      dead: 0,
    });
    await worker.stop();
    expect(ran).toEqual(["1 failed", "2 failed", "1 failed", "2 failed", "1 ok"]);
  });

  it("a task nobody answers (worker hung, no heartbeat) is caught from the MAX_DELIVERIES advisory", async () => {
    const advisoryAt: number[] = [];
    const advisories = nc.subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>", {
      callback: () => {
        advisoryAt.push(Date.now());
      },
    });
    const worker = rt.workers.start<number, number>({
      queue: "hung",
      concurrency: 4,
      stopTimeoutMs: 100,
      // The worker extends a running handler's lease by itself; past this it gives up on it.
      maxTaskMs: 300,
      handler: (task, ctx) =>
        task.index === 1
          ? new Promise((_, reject) =>
              ctx.signal.addEventListener("abort", () => reject(new Error("aborted"))),
            )
          : task.index,
    });
    const job = await rt.jobs.submit({
      queue: "hung",
      tasks: range(3),
      maxDeliver: 2,
      ackWaitMs: 400,
      maxFailures: 0.34,
    });
    let deadSeenAt = 0;
    const unsubscribe = job.subscribe((s) => {
      if (s.dead === 1 && deadSeenAt === 0) deadSeenAt = Date.now();
    });
    const final = await job.done();
    unsubscribe();
    await worker.stop();
    advisories.unsubscribe();
    expect(final).toMatchObject({ status: "succeeded", done: 2, dead: 1 });
    expect(advisoryAt).toHaveLength(1);
    const letters = await rt.jobs.deadLetters(job.id);
    expect(letters).toMatchObject([{ index: 1, payload: 1, deliveries: 2, source: "advisory" }]);
    // The task left the work queue: nothing of the job is still stored.
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info("jetstate_tasks_hung", {
      subjects_filter: `jetstate.tasks.hung.${job.id}`,
    });
    expect(info.state.subjects?.[`jetstate.tasks.hung.${job.id}`] ?? 0).toBe(0);
    console.info(`dead task visible in the job ${deadSeenAt - advisoryAt[0]!} ms after the advisory`);
  });
});

describe("cleanup", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({ servers: server.url, logger, jobs: { cleanupIntervalMs: 0 } });
    nc = await connect({ servers: server.url });
  });
  afterAll(async () => {
    await nc?.close();
    await rt?.stop();
    await server?.dispose();
  });

  it("leaves no consumer, subject message or expired record behind, on every queue; dry run changes nothing", async () => {
    const worker = rt.workers.start<number, number>({ queue: "clean", handler: (t) => t.payload });
    const finished = await rt.jobs.submit({ queue: "clean", tasks: range(10) });
    await finished.done();
    await worker.stop();
    // A queue this runtime no longer uses still has its stream looked at.
    const other = rt.workers.start<number, number>({ queue: "clean2", handler: (t) => t.payload });
    const finishedElsewhere = await rt.jobs.submit({ queue: "clean2", tasks: range(2) });
    await finishedElsewhere.done();
    await other.stop();
    // A crashed run's leftovers: consumers and tasks of jobs that have no record, on both queues.
    const jsm = await jetstreamManager(nc);
    for (const [queue, ghost] of [
      ["clean", "jghost"],
      ["clean2", "jghost2"],
    ] as const) {
      await jsm.consumers.add(`jetstate_tasks_${queue}`, {
        durable_name: ghost,
        filter_subject: `jetstate.tasks.${queue}.${ghost}`,
        ack_policy: "explicit" as never,
      });
      await jetstream(nc).publish(`jetstate.tasks.${queue}.${ghost}`, JSON.stringify({ i: 0, p: 1 }));
    }
    await jetstream(nc).publish("jetstate.results.clean.jghost", "[]");
    // Active, with a consumer of its own: must stay.
    const running = await rt.jobs.submit({ queue: "clean", tasks: range(3), lane: false });

    const dry = await rt.admin.cleanup({ dryRun: true, retentionMs: 0 });
    expect(dry).toMatchObject({ dryRun: true });
    expect(dry.consumersDeleted.sort()).toEqual(["jghost", "jghost2"]);
    expect(dry.tasksPurged.sort()).toEqual(["jetstate.tasks.clean.jghost", "jetstate.tasks.clean2.jghost2"]);
    expect(dry.recordsRemoved.sort()).toEqual([finished.id, finishedElsewhere.id].sort());
    expect(dry.resultsPurged.sort()).toEqual(
      [
        "jetstate.results.clean.jghost",
        `jetstate.results.clean.${finished.id}`,
        `jetstate.results.clean2.${finishedElsewhere.id}`,
      ].sort(),
    );
    expect((await jsm.consumers.info("jetstate_tasks_clean", "jghost")).name).toBe("jghost");
    expect((await jsm.consumers.info("jetstate_tasks_clean2", "jghost2")).name).toBe("jghost2");
    expect((await rt.jobs.list()).jobs.map((r) => r.id)).toContain(finished.id);

    const done = await rt.admin.cleanup({ retentionMs: 0 });
    expect(done.recordsRemoved.sort()).toEqual([finished.id, finishedElsewhere.id].sort());
    const consumersOf = async (stream: string) => {
      const names = [];
      for await (const c of jsm.consumers.list(stream)) names.push(c.name);
      return names;
    };
    // The queues' lanes stay: they serve every lane job.
    expect((await consumersOf("jetstate_tasks_clean")).sort()).toEqual([running.id, "lane"].sort());
    expect(await consumersOf("jetstate_tasks_clean2")).toEqual(["lane"]);
    const tasks = await jsm.streams.info("jetstate_tasks_clean", { subjects_filter: "jetstate.tasks.>" });
    expect(tasks.state.subjects).toEqual({ [`jetstate.tasks.clean.${running.id}`]: 3 });
    const tasksElsewhere = await jsm.streams.info("jetstate_tasks_clean2", {
      subjects_filter: "jetstate.tasks.>",
    });
    expect(tasksElsewhere.state.messages).toBe(0);
    const results = await jsm.streams.info("jetstate_results", { subjects_filter: "jetstate.results.>" });
    expect(Object.keys(results.state.subjects ?? {})).toEqual([]);
    expect((await rt.jobs.list()).jobs.map((r) => r.id)).toEqual([running.id]);
    // A second pass finds nothing more to do.
    const again = await rt.admin.cleanup({ retentionMs: 0 });
    expect(again).toMatchObject({
      consumersDeleted: [],
      tasksPurged: [],
      recordsRemoved: [],
      resultsPurged: [],
    });
    await running.cancel("test over");
  });
});
