/**
 * The lane on a real nats-server: small jobs share one consumer per queue;
 * a 1-task job's publish is its commit point, a larger one's its record's
 * commit write (below, "jobs of several tasks"). The oracles are the
 * server's own view (its consumer list, the stream's stored subjects, read
 * with a connection of the test's own) and the handlers' ledger of what
 * they ran, never jetstate's view of itself.
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createDashboard } from "../../src/api/dashboard.ts";
import { createHttpApi } from "../../src/api/http.ts";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { planSubmit } from "../../src/effects/plan-submit.ts";
import { reapSubmits } from "../../src/effects/reap-submits.ts";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { encodeTask } from "../../src/kernel/wire.ts";
import { crashingSubmitter } from "../harness/crashing-submitter.ts";
import { laneOracle } from "../harness/lane-oracle.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");

describe("the lane: one consumer per queue for small jobs", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({ servers: server.url, logger, jobs: { lane: true } });
    nc = await connect({ servers: server.url, name: "oracle" });
  });
  afterAll(async () => {
    await nc?.close();
    await rt?.stop();
    await server?.dispose();
  });

  const { consumersOf, stored, storedRecord } = laneOracle(() => nc);
  /** A worker of `queue` whose handler writes down each payload it runs: the ledger. */
  const ledgerWorker = (queue: string) => {
    const ran: number[] = [];
    const worker = rt.workers.start<{ n: number }, number>({
      queue,
      handler: (t) => {
        ran.push(t.payload.n);
        return 0;
      },
    });
    return { ran, worker };
  };
  /** A lane submit of one task in a runtime of its own that dies after `step` (nothing cleaned up). */
  const submitThenDie = async (
    queue: string,
    step: SubmitStep,
    beforeStop?: () => Promise<void>,
    beforeCrash?: () => Promise<void>,
  ) => {
    const crashing = await crashingSubmitter(server.url, step, {
      logger,
      lane: true,
      ...(beforeCrash ? { beforeCrash } : {}),
    });
    await expect(crashing.registry.submit({ queue, tasks: [{ n: 1 }] })).rejects.toThrow(
      /process died after/,
    );
    await beforeStop?.();
    await crashing.stop();
  };
  /** Writes the job's lease as `holder`'s until `until`, over whatever is there (raw KV put). */
  const putLease = async (jobId: string, holder: string, until: number) => {
    const kv = await new Kvm(nc).open(names.leasesBucket);
    await kv.put(jobId, JSON.stringify({ v: 1, holder, until }));
  };
  it("runs 300 one-task jobs, each task once, with no consumer of their own", async () => {
    const queue = "lane_many";
    const ran = new Map<number, number>();
    const worker = rt.workers.start<{ n: number }, number>({
      queue,
      concurrency: 16,
      handler: (t) => {
        ran.set(t.payload.n, (ran.get(t.payload.n) ?? 0) + 1);
        return t.payload.n * 2;
      },
    });
    const handles = await Promise.all(
      Array.from({ length: Number(process.env.LANE_JOBS ?? 300) }, (_, n) =>
        rt.jobs.submit({ queue, tasks: [{ n }] }),
      ),
    );
    // While they run: the lane and nothing else (a job's own consumer is named by its id).
    expect((await consumersOf(queue)).map((c) => c.name)).toEqual(["lane"]);
    const ends = await Promise.all(handles.map((h) => h.done()));
    expect(ends.every((e) => e.status === "succeeded" && e.done === 1)).toBe(true);
    expect([...ran.values()].every((count) => count === 1)).toBe(true);
    expect(ran.size).toBe(handles.length);
    const firstResult = async (h: (typeof handles)[number]) => {
      for await (const r of h.results()) return r.ok ? r.result : undefined;
    };
    expect(await Promise.all(handles.slice(0, 5).map(firstResult))).toEqual([0, 2, 4, 6, 8]);
    expect((await storedRecord(handles[0]!.id))?.lane).toBe(true);
    expect(await stored(queue, names.laneFilter(queue))).toBe(0);
    expect((await consumersOf(queue)).map((c) => c.name)).toEqual(["lane"]);
    await worker.stop();
  });

  it("keeps jobs of more than laneMaxTasks tasks, or of another ack wait, on consumers of their own", async () => {
    const queue = "lane_mixed";
    const worker = rt.workers.start<{ n: number }, number>({ queue, handler: (t) => t.payload.n });
    const big = await rt.jobs.submit({ queue, tasks: Array.from({ length: 101 }, (_, n) => ({ n })) });
    const slow = await rt.jobs.submit({ queue, tasks: [{ n: 3 }], ackWaitMs: 60_000 });
    const small = await rt.jobs.submit({ queue, tasks: [{ n: 4 }] });
    expect((await storedRecord(big.id))?.lane).toBeUndefined();
    expect((await storedRecord(slow.id))?.lane).toBeUndefined();
    expect((await storedRecord(small.id))?.lane).toBe(true);
    const ends = await Promise.all([big.done(), slow.done(), small.done()]);
    expect(ends.map((e) => e.status)).toEqual(["succeeded", "succeeded", "succeeded"]);
    await worker.stop();
  });

  it("cancel removes a waiting lane task: a worker started later never runs it", async () => {
    const queue = "lane_cancel";
    const job = await rt.jobs.submit({ queue, tasks: [{ n: 1 }] });
    const subject = names.laneSubject(queue, job.id);
    expect(await stored(queue, subject)).toBe(1);
    await job.cancel("not wanted");
    expect(await stored(queue, subject)).toBe(0);
    const { ran, worker } = ledgerWorker(queue);
    const other = await rt.jobs.submit({ queue, tasks: [{ n: 2 }] });
    await other.done();
    await worker.stop();
    expect(ran).toEqual([2]);
    expect((await job.done()).status).toBe("failed");
  });

  it("a lane task whose job is over is removed, never run", async () => {
    const queue = "lane_orphan";
    const job = await rt.jobs.submit({ queue, tasks: [{ n: 1 }] });
    await job.cancel("over");
    // A task that lands after its job ended (a publish that outlived its submit's rollback).
    await jetstream(nc).publish(names.laneSubject(queue, job.id), encodeTask(0, { n: 1 }));
    expect(await stored(queue, names.laneSubject(queue, job.id))).toBe(1);
    const { ran, worker } = ledgerWorker(queue);
    await waitUntil(async () => (await stored(queue, names.laneSubject(queue, job.id))) === 0, {
      timeoutMs: 5000,
      message: "the orphan lane task removed",
    });
    await worker.stop();
    expect(ran).toEqual([]);
  });

  it("a task whose every delivery went unanswered is dead-lettered under its job, its payload kept", async () => {
    const queue = "lane_exhausted";
    const job = await rt.jobs.submit({ queue, tasks: [{ n: 7 }] });
    // Workers that die holding the task, one after the other: each delivery taken, never answered
    // (a nak stands for its lease running out), through a raw client of the test's own.
    const lane = await jetstream(nc).consumers.get(names.tasksStream(queue), "lane");
    const deliveries: number[] = [];
    for (let n = 0; n < 6 && deliveries.length < 5; n++) {
      for await (const m of await lane.fetch({ max_messages: 1, expires: 1000 })) {
        deliveries.push(m.info.deliveryCount);
        m.nak();
      }
    }
    expect(deliveries).toEqual([1, 2, 3, 4, 5]);
    // The server's next attempt is its MAX_DELIVERIES advisory, sent only while a pull waits: the
    // runtime dead-letters the task. Pulled until the job ends (one pull, unless the last nak
    // reached the server after it expired), each pull delivering nothing.
    let over = false;
    const ended = job.done().finally(() => {
      over = true;
    });
    const deadline = Date.now() + 20_000;
    while (!over) {
      if (Date.now() > deadline)
        throw new Error("no MAX_DELIVERIES advisory dead-lettered the task within 20 s");
      for await (const m of await lane.fetch({ max_messages: 1, expires: 1000 }))
        throw new Error(`delivered again: ${m.info.deliveryCount}`);
    }
    const end = await ended;
    expect(end).toMatchObject({ status: "failed", dead: 1, done: 0 });
    const letters = await rt.jobs.deadLetters(job.id);
    expect(letters.map((l) => [l.index, l.payload, l.deliveries, l.source])).toEqual([
      [0, { n: 7 }, 5, "advisory"],
    ]);
    expect(await stored(queue, names.laneSubject(queue, job.id))).toBe(0);
  });

  it("a lane consumer deleted under a running worker is made again, and the next lane job runs", async () => {
    const queue = "lane_lost";
    const { ran, worker } = ledgerWorker(queue);
    await (await rt.jobs.submit({ queue, tasks: [{ n: 1 }] })).done();
    await (await jetstreamManager(nc)).consumers.delete(names.tasksStream(queue), "lane");
    expect((await consumersOf(queue)).map((c) => c.name)).toEqual([]);
    const next = await rt.jobs.submit({ queue, tasks: [{ n: 2 }] });
    expect(await next.done()).toMatchObject({ status: "succeeded", done: 1 });
    expect(ran).toEqual([1, 2]);
    expect((await consumersOf(queue)).map((c) => c.name)).toEqual(["lane"]);
    await worker.stop();
  });

  it.each([
    [SubmitStep.recordCreated, "rolledBack"],
    [SubmitStep.tasksPublished, "committed"],
  ] as const)("a submit that dies after %s is %s by the reaper", async (step, expected) => {
    const queue = `lane_crash_${step}`;
    let jobId = "";
    // Its lease held meanwhile by someone alive (no heartbeat, an hour to run): this runtime's
    // takeover passes leave the job alone, so what finishes its submit is the reaper's pass
    // (a takeover would write a lane job's commit first, and the reaper find nothing to do).
    // Written before the crash: the dead submitter gives its lease back at once, and a takeover
    // pass between that and this write took the job over.
    await submitThenDie(queue, step, undefined, async () => {
      jobId = (await rt.jobs.list({ queue })).jobs[0]!.id;
      await putLease(jobId, "alive", Date.now() + 3600_000);
    });
    const report = await partsOf(rt).jobs.reap(() => Date.now() + 10 * 60_000);
    const after = await storedRecord(jobId);
    if (expected === "rolledBack") {
      expect(report.rolledBack).toEqual([jobId]);
      expect(after).toMatchObject({ status: "failed", phase: "rolledBack" });
      expect(await stored(queue, names.laneSubject(queue, jobId))).toBe(0);
      return;
    }
    expect(report).toEqual({ rolledBack: [], rolledForward: [jobId] });
    expect(after).toMatchObject({ status: "running", phase: "committed" });
    // Its holder gone (the lease given back): this runtime takes the job over and ends it.
    await putLease(jobId, "alive", 0);
    const worker = rt.workers.start<{ n: number }, number>({ queue, handler: (t) => t.payload.n });
    const handle = await rt.jobs.get(jobId);
    expect(await handle!.done()).toMatchObject({ status: "succeeded", done: 1 });
    await worker.stop();
  });
  it("an idempotent resubmit meets a submit whose stored publish lost its answer: one job, committed for both, its task run once", async () => {
    const queue = "lane_resubmit_lost";
    const once = { queue, tasks: [{ n: 1 }], idempotencyKey: "once" };
    let reached!: () => void;
    const atPublish = new Promise<void>((resolve) => {
      reached = resolve;
    });
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    // Its task is stored, but its submit hears no answer (cut off, a timeout): it rolls back.
    const first = await crashingSubmitter(server.url, SubmitStep.tasksPublished, {
      logger,
      lane: true,
      failure: async () => {
        reached();
        await held;
        throw new Error("publish answer lost");
      },
    });
    const { ran, worker } = ledgerWorker(queue);
    try {
      const submitting = first.registry.submit(once);
      await atPublish;
      await waitUntil(() => ran.length === 1, { timeoutMs: 5000, message: "the task ran" });
      const resubmitted = await rt.jobs.submit(once);
      release();
      // Before the fix: the first submit rolled the job back after the resubmit had answered with
      // it; the resubmit's job then failed ("submit failed"), and the key's next submit ran the task again.
      expect((await submitting).id).toBe(resubmitted.id);
      expect(await resubmitted.done()).toMatchObject({ status: "succeeded", done: 1 });
      expect(await storedRecord(resubmitted.id)).toMatchObject({ phase: "committed", status: "succeeded" });
      const again = await rt.jobs.submit(once);
      expect(await again.done()).toMatchObject({ status: "succeeded", done: 1 });
      expect(ran).toEqual([1]);
    } finally {
      release();
      await worker.stop();
      await first.stop();
    }
  });

  it("a lane job watched from another runtime when its submitter died after its publish: the watcher's takeover writes its commit", async () => {
    const queue = "lane_crash_watched";
    const taker = await createRuntime({
      servers: server.url,
      logger,
      jobs: { lane: true, leaseMs: 1000, reapIntervalMs: 3600_000 },
    });
    try {
      await submitThenDie(queue, SubmitStep.tasksPublished);
      const {
        jobs: [submitted],
      } = await taker.jobs.list({ queue });
      // Watched before its lease runs out: the watcher takes it over, not a pass over orphans.
      const watched = await taker.jobs.get(submitted!.id);
      expect(watched?.snapshot().status).toBe("running");
      // No worker: the job runs on. Before the fix its record said `submitting` until its end or
      // the reaper (its deadline + grace: ~40 s): `list()`, `GET /jobs` and events saw no commit.
      await waitUntil(async () => (await storedRecord(submitted!.id))?.phase === "committed", {
        timeoutMs: 5000,
        message: "the commit written by the watcher's takeover",
      });
      expect(await storedRecord(submitted!.id)).toMatchObject({ status: "running" });
      const { ran, worker } = ledgerWorker(queue);
      expect(await watched!.done()).toMatchObject({ status: "succeeded", done: 1 });
      await worker.stop();
      expect(ran).toEqual([1]);
    } finally {
      await taker.stop();
    }
  });

  it("a lane job whose submitter died after its publish is taken over within the lease, not left to the reaper", async () => {
    // Its record says `submitting` until the job's next write (its commit is written with it):
    // the submitter died before that one, 30 s before the reaper may touch the record.
    const queue = "lane_crash_takeover";
    // Read as it dies, while it still renews its lease: once it is dead its lease is given back,
    // and this file's runtime (whose takeover pass runs every 5 s) may take the job over and
    // write its commit before the read.
    let submitting: Awaited<ReturnType<typeof storedRecord>>;
    await submitThenDie(queue, SubmitStep.tasksPublished, undefined, async () => {
      const {
        jobs: [submitted],
      } = await rt.jobs.list({ queue });
      submitting = await storedRecord(submitted!.id);
    });
    expect(submitting).toMatchObject({ phase: "submitting" });
    const jobId = submitting!.id;
    const taker = await createRuntime({
      servers: server.url,
      logger,
      jobs: { lane: true, leaseMs: 300, reapIntervalMs: 3600_000 },
    });
    const { ran, worker } = ledgerWorker(queue);
    try {
      await waitUntil(async () => (await storedRecord(jobId))?.status === "succeeded", {
        timeoutMs: 5000,
        message: "the job was not taken over and ended",
      });
      expect(await storedRecord(jobId)).toMatchObject({ phase: "committed", counts: { done: 1 } });
      expect(ran).toEqual([1]);
    } finally {
      await worker.stop();
      await taker.stop();
    }
  });
  it("another runtime gets and cancels a lane job whose commit is not written yet", async () => {
    const queue = "lane_window";
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const worker = rt.workers.start<{ n: number }, number>({
      queue,
      handler: async (_task, { signal }) => {
        started();
        await Promise.race([held, new Promise((resolve) => signal.addEventListener("abort", resolve))]);
        return 0;
      },
    });
    // The submitter's record writes of the job are held until `commitWrite` opens: its
    // progress write a second after the submit would write the commit, and under load the
    // steps below took longer than that (2 failures in 10 runs beside a busy core).
    const commitWrite = gate();
    const options = { servers: server.url, logger, jobs: { lane: true } };
    const core = await createRuntimeCore(options);
    const { broker } = spiedBroker(
      createNatsBroker(core, { retentionMs: core.options.jobs.retentionMs, holder: "lane-window" }),
      (name, _n, args, call) =>
        name === "updateRecord" && (args[0] as JobRecord).queue === queue
          ? commitWrite.opened.then(call)
          : call(),
    );
    const submitter = await createRuntime({ ...options, broker });
    const other = await createRuntime(options);
    try {
      const job = await submitter.jobs.submit({ queue, tasks: [{ n: 1 }] });
      await running;
      // Its task runs; its record, read raw, still says what its create wrote.
      expect(await storedRecord(job.id)).toMatchObject({ phase: "submitting" });
      // The HTTP API and the dashboard of the other runtime show it as its `get` does.
      const tokens = { "reader-token-0123456789": { identity: "ops", role: "read", queues: "*" } } as const;
      const shown = async (fetch: (request: Request) => Promise<Response>, path: string) => {
        const res = await fetch(
          new Request(`http://test${path}`, { headers: { authorization: "Bearer reader-token-0123456789" } }),
        );
        expect(res.status).toBe(200);
        return res.json();
      };
      /** The first `progress` event of a dashboard stream (server-sent events). */
      const firstProgress = async (fetch: (request: Request) => Promise<Response>, path: string) => {
        const ac = new AbortController();
        const res = await fetch(
          new Request(`http://test${path}`, {
            headers: { authorization: "Bearer reader-token-0123456789" },
            signal: ac.signal,
          }),
        );
        const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
        let text = "";
        try {
          for (;;) {
            const block = /event: progress\ndata: (.*)\n\n/.exec(text);
            if (block) return JSON.parse(block[1]!);
            const { done, value } = await reader.read();
            if (done) throw new Error(`the stream ended before a progress event: ${text}`);
            text += value;
          }
        } finally {
          ac.abort();
          await reader.cancel().catch(() => undefined);
        }
      };
      const dashboard = createDashboard(other, { tokens });
      expect(await shown(createHttpApi(other, { tokens }).fetch, `/jobs/${job.id}`)).toMatchObject({
        status: "running",
      });
      expect(await shown(dashboard.fetch, `/api/jobs/${job.id}`)).toMatchObject({ status: "running" });
      expect(await firstProgress(dashboard.fetch, `/api/jobs/${job.id}/stream`)).toMatchObject({
        status: "running",
      });
      await dashboard.stop();
      // Still not written: what they showed came from the task, not from a commit written meanwhile.
      expect(await storedRecord(job.id)).toMatchObject({ phase: "submitting" });
      const seen = await other.jobs.get(job.id);
      expect(seen?.snapshot()).toMatchObject({ status: "running" });
      expect(await other.jobs.record(job.id)).toMatchObject({ phase: "committed", status: "running" });
      await seen!.cancel("not wanted");
      expect(await job.done()).toMatchObject({ status: "failed", reason: "cancelled: not wanted" });
      expect(await storedRecord(job.id)).toMatchObject({
        phase: "committed",
        status: "failed",
        reason: "cancelled: not wanted",
      });
    } finally {
      release();
      commitWrite.open();
      await worker.stop();
      await other.stop();
      await submitter.stop();
      await core.stop();
    }
  });
  it("a lane job still running a second after its submit has its commit written", async () => {
    const queue = "lane_commit_write";
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let running = false;
    const worker = rt.workers.start<{ n: number }, number>({
      queue,
      handler: async () => {
        running = true;
        await held;
        return 0;
      },
    });
    try {
      const job = await rt.jobs.submit({ queue, tasks: [{ n: 1 }] });
      await waitUntil(async () => (await storedRecord(job.id))?.phase === "committed", {
        timeoutMs: 3000,
        message: "the commit was not written",
      });
      expect(running).toBe(true);
      expect(await storedRecord(job.id)).toMatchObject({ status: "running", counts: { done: 0 } });
      release();
      expect(await job.done()).toMatchObject({ status: "succeeded" });
      expect(await storedRecord(job.id)).toMatchObject({ phase: "committed", status: "succeeded" });
    } finally {
      release();
      await worker.stop();
    }
  });

  /**
   * Lane jobs of several tasks: they commit by their record's write, so a
   * worker may get a task before its job commits and must hold it unrun
   * until then. Oracles as above, and the lane consumer's own counts.
   */
  describe("jobs of several tasks", () => {
    const laneInfo = async (queue: string) =>
      (await jetstreamManager(nc)).consumers.info(names.tasksStream(queue), "lane");
    /** A worker of `queue` whose handler writes down each `job:n` it runs: the ledger. */
    const jobLedgerWorker = (queue: string, concurrency = 8) => {
      const ran: string[] = [];
      const worker = rt.workers.start<{ job: string; n: number }, number>({
        queue,
        concurrency,
        handler: (t) => {
          ran.push(`${t.payload.job}:${t.payload.n}`);
          return t.payload.n;
        },
      });
      return { ran, worker };
    };
    const tasksOf = (job: string, total: number) => Array.from({ length: total }, (_, n) => ({ job, n }));

    it("runs 40 jobs of 25 tasks on the lane: each task once, exact counts, no consumer of their own", async () => {
      const queue = "lane_batches";
      const { ran, worker } = jobLedgerWorker(queue, 16);
      const handles = await Promise.all(
        Array.from({ length: 40 }, (_, j) => rt.jobs.submit({ queue, tasks: tasksOf(`j${j}`, 25) })),
      );
      expect((await consumersOf(queue)).map((c) => c.name)).toEqual(["lane"]);
      const ends = await Promise.all(handles.map((h) => h.done()));
      expect(ends.every((e) => e.status === "succeeded" && e.done === 25 && e.failed === 0)).toBe(true);
      const expected = Array.from({ length: 40 }, (_, j) =>
        tasksOf(`j${j}`, 25).map((t) => `${t.job}:${t.n}`),
      );
      expect([...ran].sort()).toEqual(expected.flat().sort());
      expect((await storedRecord(handles[0]!.id))?.lane).toBe(true);
      expect(await stored(queue, names.laneFilter(queue))).toBe(0);
      expect((await consumersOf(queue)).map((c) => c.name)).toEqual(["lane"]);
      await worker.stop();
    });

    it("keeps a job of more tasks than laneMaxTasks on a consumer of its own", async () => {
      const queue = "lane_over_cap";
      const small = await createRuntime({
        servers: server.url,
        logger,
        jobs: { lane: true, laneMaxTasks: 3 },
      });
      try {
        const fits = await small.jobs.submit({ queue, tasks: tasksOf("a", 3) });
        const over = await small.jobs.submit({ queue, tasks: tasksOf("b", 4) });
        expect((await storedRecord(fits.id))?.lane).toBe(true);
        expect((await storedRecord(over.id))?.lane).toBeUndefined();
        expect((await consumersOf(queue)).map((c) => c.name).sort()).toEqual([over.id, "lane"].sort());
        const { ran, worker } = jobLedgerWorker(queue);
        expect((await Promise.all([fits.done(), over.done()])).map((e) => e.done)).toEqual([3, 4]);
        await worker.stop();
        expect(ran.length).toBe(7);
      } finally {
        await small.stop();
      }
    });

    it("tasks a worker gets before their job's commit run only after it, without spending a delivery", async () => {
      const queue = "lane_held";
      const { ran, worker } = jobLedgerWorker(queue);
      let resume!: () => void;
      const pause = new Promise<void>((resolve) => {
        resume = resolve;
      });
      const slow = await crashingSubmitter(server.url, SubmitStep.tasksPublished, {
        logger,
        lane: true,
        pause,
      });
      try {
        const submitted = slow.registry.submit({ queue, tasks: tasksOf("held", 10) });
        let submitDone = false;
        void submitted.finally(() => {
          submitDone = true;
        });
        // The worker has all ten, unacked (the server's count), while the record says `submitting`.
        await waitUntil(async () => (await laneInfo(queue)).num_ack_pending === 10, {
          timeoutMs: 10_000,
          message: "the worker holds the job's ten tasks",
        });
        // A task run as it came would have been acked: ten held, none ran, and the submit waits.
        expect(ran).toEqual([]);
        expect(submitDone).toBe(false);
        expect((await consumersOf(queue)).map((c) => c.name)).toEqual(["lane"]);
        resume();
        const job = await submitted;
        expect(await job.done()).toMatchObject({ status: "succeeded", done: 10 });
        expect([...ran].sort()).toEqual(
          tasksOf("held", 10)
            .map((t) => `${t.job}:${t.n}`)
            .sort(),
        );
        // Held, not released: no task was delivered twice.
        expect((await laneInfo(queue)).num_redelivered).toBe(0);
      } finally {
        resume();
        await slow.stop();
        await worker.stop();
      }
    });

    it("a submitter that died between its tasks and its commit: rolled back, the tasks a worker held never run and are removed", async () => {
      const queue = "lane_dead_submit";
      const { ran, worker } = jobLedgerWorker(queue);
      const dying = await crashingSubmitter(server.url, SubmitStep.tasksPublished, { logger, lane: true });
      await expect(dying.registry.submit({ queue, tasks: tasksOf("dead", 6) })).rejects.toThrow(
        /process died after/,
      );
      await dying.stop();
      await waitUntil(async () => (await laneInfo(queue)).num_ack_pending === 6, {
        timeoutMs: 10_000,
        message: "the worker holds the dead submit's six tasks",
      });
      // The reaper, past the commit deadline: stored tasks do not commit a job of several tasks.
      // This host's clock is the server's (0 ahead).
      const report = await reapSubmits(
        partsOf(rt).broker,
        () => Date.now() + 3600_000,
        0,
        () => 0,
      );
      expect(report.rolledForward).toEqual([]);
      expect(report.rolledBack).toHaveLength(1);
      const [id] = report.rolledBack;
      expect(await storedRecord(id!)).toMatchObject({ phase: "rolledBack", status: "failed" });
      expect(await stored(queue, names.laneSubject(queue, id!))).toBe(0);
      await waitUntil(async () => (await laneInfo(queue)).num_ack_pending === 0, {
        timeoutMs: 10_000,
        message: "the held tasks let go",
      });
      // The next job on the lane runs; the dead submit's tasks never did.
      const next = await rt.jobs.submit({ queue, tasks: tasksOf("next", 2) });
      await next.done();
      await worker.stop();
      expect([...ran].sort()).toEqual(["next:0", "next:1"]);
    });

    // The next submit on the lane too, or with a consumer of its own (another runtime's `jobs.lane`
    // or `laneMaxTasks`, or a submit's `lane: false`: the same request for its key).
    for (const nextLane of [true, false])
      it(`tasks of a submit rolled back, still stored when the next submit of the key commits${nextLane ? "" : " with a consumer of its own"}, never run: the next one's each once`, async () => {
        const queue = `lane_other_submit_${nextLane}`;
        const { broker } = partsOf(rt);
        const { ran, worker } = jobLedgerWorker(queue);
        // The queue's lane made and pulled by the worker, as any lane job of the queue does.
        await (await rt.jobs.submit({ queue, tasks: tasksOf("before", 2) })).done();
        const never = new AbortController().signal;
        // Two submits of one key, made through the port. Their payloads differ (a real resubmit's
        // are the same) only so the ledger tells whose task ran.
        const plan = (job: string, lane = true) =>
          planSubmit({ queue, tasks: tasksOf(job, 3), idempotencyKey: "one-key" }, 1 << 20, Date.now(), lane);
        const firstPlan = await plan("first");
        const first = firstPlan.record;
        const next = await plan("next", nextLane);
        expect(next.record.id).toBe(first.id);
        expect(next.record.lane === true).toBe(nextLane);
        expect(next.record.submitId).not.toBe(first.submitId);
        const created = await broker.createRecord(first);
        await broker.publishTasks(first, firstPlan.bodies, never);
        await waitUntil(async () => (await laneInfo(queue)).num_ack_pending === 3, {
          timeoutMs: 10_000,
          message: "the worker holds the first submit's three tasks",
        });
        // Rolled back, its tasks not removed yet (a rollback marks the record first); the next
        // submit takes the record over, publishes its own tasks and commits.
        const marked = await broker.updateRecord(
          { ...first, phase: "rolledBack", status: "failed" },
          created,
        );
        const taken = await broker.updateRecord(next.record, marked);
        await broker.publishTasks(next.record, next.bodies, never);
        if (!nextLane) await broker.createConsumer(queue, next.record.id, next.record.settings);
        await broker.updateRecord({ ...next.record, phase: "committed", status: "running" }, taken);
        // All six handled: the next submit's acked once answered, the first's removed.
        await waitUntil(async () => (await stored(queue, names.laneSubject(queue, first.id))) === 0, {
          timeoutMs: 15_000,
          message: "every task of both submits handled",
        });
        await worker.stop();
        expect([...ran].sort()).toEqual(["before:0", "before:1", "next:0", "next:1", "next:2"]);
      });

    /**
     * The key's job made again after its record went with no end written (a store made again,
     * or the record removed by hand): a worker of `queue` (its ledger in `ran`; the first job's
     * last task runs until its handler is told to stop) ran the first job's `total` tasks,
     * whose record is then purged; `next` is the key's next submit, planned, not made.
     */
    const firstJobGone = async (queue: string, total: number, concurrency: number) => {
      const { broker } = partsOf(rt);
      const ran: string[] = [];
      const worker = rt.workers.start<{ job: string; n: number }, number>({
        queue,
        concurrency,
        handler: async (t, { signal }) => {
          ran.push(`${t.payload.job}:${t.payload.n}`);
          if (t.payload.job === "first" && t.payload.n === total - 1)
            await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
          return t.payload.n;
        },
      });
      const plan = (job: string) =>
        planSubmit({ queue, tasks: tasksOf(job, total), idempotencyKey: queue }, 1 << 20, Date.now(), true);
      const first = await plan("first");
      const created = await broker.createRecord(first.record);
      await broker.publishTasks(first.record, first.bodies, never);
      await broker.updateRecord({ ...first.record, phase: "committed", status: "running" }, created);
      await waitUntil(() => ran.length === total, {
        timeoutMs: 10_000,
        message: "the first job's tasks run",
      });
      await (await new Kvm(nc).open(names.jobsBucket)).purge(first.record.id);
      const next = await plan("next");
      expect(next.record.id).toBe(first.record.id);
      return { broker, ran, worker, next };
    };
    const never = new AbortController().signal;

    it("a key's job made again after its record went (no end heard): a worker that followed the first runs the next one's tasks", async () => {
      const queue = "lane_made_again";
      const { broker, ran, worker, next } = await firstJobGone(queue, 3, 8);
      // The worker hears it running at once (its `submitting` write missed, or not written).
      await broker.createRecord({ ...next.record, phase: "committed", status: "running" });
      await broker.publishTasks(next.record, next.bodies, never);
      await waitUntil(() => ran.length === 6, { timeoutMs: 10_000, message: "the next job's tasks run" });
      // The task still running when the next job was heard is handed back, then removed as a task
      // of another submit (dropped, it stayed leased to the lane's 30 s ack wait).
      await waitUntil(async () => (await stored(queue, names.laneSubject(queue, next.record.id))) === 0, {
        timeoutMs: 10_000,
        message: "every task of both handled",
      });
      await worker.stop();
      expect([...ran].sort()).toEqual(["first:0", "first:1", "first:2", "next:0", "next:1", "next:2"]);
    });

    it("the key's job made again, its tasks come before its record: those waiting for a slot under the job followed are handed back, not dropped", async () => {
      const queue = "lane_made_again_waiting";
      // One slot, held by the first job's last task.
      const { broker, ran, worker, next } = await firstJobGone(queue, 2, 1);
      // The next job's tasks reach the worker before its record: under the job it follows, the
      // first waits for the one slot (a pull of one at a time: nothing more is leased meanwhile).
      await broker.publishTasks(next.record, next.bodies, never);
      await waitUntil(async () => (await laneInfo(queue)).num_ack_pending === 2, {
        timeoutMs: 10_000,
        message: "the next job's first task leased, waiting for the slot",
      });
      await broker.createRecord({ ...next.record, phase: "committed", status: "running" });
      // Handed back, they run at once (dropped, each waited out the lane's 30 s ack wait).
      await waitUntil(() => ran.includes("next:0") && ran.includes("next:1"), {
        timeoutMs: 10_000,
        message: "the next job's tasks run",
      });
      await worker.stop();
      expect([...ran].sort()).toEqual(["first:0", "first:1", "next:0", "next:1"]);
    });

    it("cancel removes every waiting task of a lane job: a worker started later runs none of them", async () => {
      const queue = "lane_cancel_many";
      const job = await rt.jobs.submit({ queue, tasks: tasksOf("gone", 30) });
      expect(await stored(queue, names.laneSubject(queue, job.id))).toBe(30);
      await job.cancel("not wanted");
      expect(await stored(queue, names.laneSubject(queue, job.id))).toBe(0);
      const { ran, worker } = jobLedgerWorker(queue);
      const other = await rt.jobs.submit({ queue, tasks: tasksOf("kept", 3) });
      await other.done();
      await worker.stop();
      expect([...ran].sort()).toEqual(["kept:0", "kept:1", "kept:2"]);
      expect((await job.done()).status).toBe("failed");
    });
  });
});
