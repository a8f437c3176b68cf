/**
 * Lane jobs of several tasks on a real nats-server: they share the queue's
 * lane consumer and commit by their record's write, so a worker may get a
 * task before its job commits and must hold it unrun until then. The
 * oracles are the server's own view (its consumers, the lane consumer's
 * counts, the stream's stored subjects, read with a connection of the
 * test's own), the records as stored, and the handlers' ledger of what they
 * ran, never jetstate's view of itself.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { reapSubmits } from "../../src/effects/reap-submits.ts";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import { crashingSubmitter } from "../harness/crashing-submitter.ts";
import { laneOracle } from "../harness/lane-oracle.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");

describe("lane jobs of several tasks", () => {
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
  const laneInfo = async (queue: string) =>
    (await jetstreamManager(nc)).consumers.info(names.tasksStream(queue), "lane");
  /** A worker of `queue` whose handler writes down each `job:n` it runs: the ledger. */
  const ledgerWorker = (queue: string, concurrency = 8) => {
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
    const { ran, worker } = ledgerWorker(queue, 16);
    const handles = await Promise.all(
      Array.from({ length: 40 }, (_, j) => rt.jobs.submit({ queue, tasks: tasksOf(`j${j}`, 25) })),
    );
    expect((await consumersOf(queue)).map((c) => c.name)).toEqual(["lane"]);
    const ends = await Promise.all(handles.map((h) => h.done()));
    expect(ends.every((e) => e.status === "succeeded" && e.done === 25 && e.failed === 0)).toBe(true);
    const expected = Array.from({ length: 40 }, (_, j) => tasksOf(`j${j}`, 25).map((t) => `${t.job}:${t.n}`));
    expect([...ran].sort()).toEqual(expected.flat().sort());
    expect((await storedRecord(handles[0]!.id))?.lane).toBe(true);
    expect(await stored(queue, names.laneFilter(queue))).toBe(0);
    expect((await consumersOf(queue)).map((c) => c.name)).toEqual(["lane"]);
    await worker.stop();
  });

  it("keeps a job of more tasks than laneMaxTasks on a consumer of its own", async () => {
    const queue = "lane_over_cap";
    const small = await createRuntime({ servers: server.url, logger, jobs: { lane: true, laneMaxTasks: 3 } });
    try {
      const fits = await small.jobs.submit({ queue, tasks: tasksOf("a", 3) });
      const over = await small.jobs.submit({ queue, tasks: tasksOf("b", 4) });
      expect((await storedRecord(fits.id))?.lane).toBe(true);
      expect((await storedRecord(over.id))?.lane).toBeUndefined();
      expect((await consumersOf(queue)).map((c) => c.name).sort()).toEqual([over.id, "lane"].sort());
      const { ran, worker } = ledgerWorker(queue);
      expect((await Promise.all([fits.done(), over.done()])).map((e) => e.done)).toEqual([3, 4]);
      await worker.stop();
      expect(ran.length).toBe(7);
    } finally {
      await small.stop();
    }
  });

  it("tasks a worker gets before their job's commit run only after it, without spending a delivery", async () => {
    const queue = "lane_held";
    const { ran, worker } = ledgerWorker(queue);
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
      // The worker has all ten, unacked (the server's count), while the record says `submitting`.
      await waitUntil(async () => (await laneInfo(queue)).num_ack_pending === 10, {
        timeoutMs: 10_000,
        message: "the worker holds the job's ten tasks",
      });
      await new Promise((r) => setTimeout(r, 300));
      expect(ran).toEqual([]);
      const handle = await Promise.race([submitted, new Promise((r) => setTimeout(() => r("pending"), 50))]);
      expect(handle).toBe("pending");
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
    const { ran, worker } = ledgerWorker(queue);
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
    const report = await reapSubmits(partsOf(rt).broker, () => Date.now() + 3600_000, 0);
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

  it("cancel removes every waiting task of a lane job: a worker started later runs none of them", async () => {
    const queue = "lane_cancel_many";
    const job = await rt.jobs.submit({ queue, tasks: tasksOf("gone", 30) });
    expect(await stored(queue, names.laneSubject(queue, job.id))).toBe(30);
    await job.cancel("not wanted");
    expect(await stored(queue, names.laneSubject(queue, job.id))).toBe(0);
    const { ran, worker } = ledgerWorker(queue);
    const other = await rt.jobs.submit({ queue, tasks: tasksOf("kept", 3) });
    await other.done();
    await worker.stop();
    expect([...ran].sort()).toEqual(["kept:0", "kept:1", "kept:2"]);
    expect((await job.done()).status).toBe("failed");
  });
});
