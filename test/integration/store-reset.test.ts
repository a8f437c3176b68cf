import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { whenAborted } from "../../src/kernel/signals.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsRawResults, tally } from "../harness/raw-results.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

/** The queue's record as the server holds it, read raw on a client of the test's own (undefined: none, or a marker). */
const storedQueue = async (url: string, queue: string): Promise<{ paused?: boolean } | undefined> => {
  const nc = await connect({ servers: url, name: "raw-queues" });
  try {
    const bucket = brokerNames("jetstate").queuesBucket;
    const message = await (await jetstreamManager(nc)).streams
      .getMessage(`KV_${bucket}`, { last_by_subj: `$KV.${bucket}.${queue}` })
      .catch(() => null);
    return message && message.data.length > 0 ? (message.json() as { paused?: boolean }) : undefined;
  } finally {
    await nc.close();
  }
};

/**
 * "Outgrowing one machine", item 4: the server comes back on the same port
 * with an empty store (lost disk, a new node in its place). The runtime's
 * client reconnects to a server without any stream, consumer or bucket.
 * A job in flight cannot finish (its tasks are gone) and must end, failed
 * with a reason that says so; the same runtime must take new jobs without
 * a manual `rt.connection.reset()`.
 */
describe("nats-server restarted with an empty store mid-job", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({
      servers: server.url,
      logger,
      connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 1000 },
      jobs: { leaseMs: 2000, cleanupIntervalMs: 0 },
    });
  });
  afterAll(async () => {
    await rt?.stop();
    await server?.dispose();
  });

  it("fails the lost job with a reason naming the lost store, and a new job runs exact", async () => {
    const queue = "reset";
    // The handlers' own ledger: job id → index → times handled.
    const ledger = new Map<string, number[]>();
    let holdFrom = 5; // tasks from this index on wait until the gate opens
    const held = gate();
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 4,
      handler: async (task, ctx) => {
        const seen = ledger.get(task.jobId) ?? [];
        seen.push(task.index);
        ledger.set(task.jobId, seen);
        if (task.index >= holdFrom) await Promise.race([held.opened, whenAborted(ctx.signal)]);
        return task.payload * 2;
      },
    });
    const lost = await rt.jobs.submit({
      queue,
      tasks: Array.from({ length: 20 }, (_, n) => n),
      ackWaitMs: 2000,
      stallAfterMs: 1000,
    });
    await waitUntil(() => lost.snapshot().done >= 5, { timeoutMs: 20_000, message: "five tasks done" });
    expect(lost.snapshot().status).toBe("running");
    // Another process watches the job (a `get`): the store's revisions start over after the
    // reset, so the end written then has a revision below every one it knew.
    const other = await createRuntime({
      servers: server.url,
      logger,
      connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 1000 },
      jobs: { leaseMs: 2000, cleanupIntervalMs: 0, takeOver: false },
    });
    const watched = await other.jobs.get(lost.id);
    expect(watched?.snapshot().status).toBe("running");

    await server.restartEmpty();
    // Independent witness: the server really holds nothing of jetstate any more.
    const raw = await connect({ servers: server.url, name: "raw" });
    try {
      const names: string[] = [];
      for await (const name of (await jetstreamManager(raw)).streams.names()) names.push(name);
      expect(names.filter((n) => n.startsWith("jetstate_") || n.startsWith("KV_jetstate_"))).toEqual([]);
    } finally {
      await raw.close();
    }
    held.open();

    // done() resolves (generous bound: "at all"), failed, and the reason names the lost store.
    const ended = await within(lost.done(), 45_000);
    expect(ended).not.toBe("never");
    expect(ended).toMatchObject({ status: "failed" });
    expect((ended as { reason?: string }).reason).toMatch(/tasks lost: the server's store was reset/);
    // The watcher sees that end too.
    const seenEnded = await within(watched!.done(), 15_000);
    await other.stop();
    expect(seenEnded).toMatchObject({ status: "failed", reason: (ended as { reason?: string }).reason });

    // A new job on the same runtime, no manual reset: it commits and completes exact.
    holdFrom = Number.POSITIVE_INFINITY;
    const total = 30;
    const fresh = await rt.jobs.submit({ queue, tasks: Array.from({ length: total }, (_, n) => n) });
    const final = await fresh.done();
    expect(final).toMatchObject({ status: "succeeded", done: total, failed: 0, dead: 0, total });
    await worker.stop();

    const reader = await connect({ servers: server.url, name: "raw-results" });
    try {
      const stored = await natsRawResults(reader, queue, fresh.id);
      const all = Array.from({ length: total }, (_, n) => n);
      expect([...tally(stored.map((e) => e.i)).keys()].sort((a, b) => a - b)).toEqual(all);
      expect(stored.every((e) => e.ok === true)).toBe(true);
      // The record as the server holds it, read raw.
      const jsm = await jetstreamManager(reader);
      const names = brokerNames("jetstate");
      const entry = await jsm.streams.getMessage(`KV_${names.jobsBucket}`, {
        last_by_subj: `$KV.${names.jobsBucket}.${fresh.id}`,
      });
      expect(entry?.json()).toMatchObject({
        status: "succeeded",
        counts: { done: total, failed: 0, dead: 0 },
      });
    } finally {
      await reader.close();
    }
    // Every task of the new job reached a handler.
    expect([...new Set(ledger.get(fresh.id))].sort((a, b) => a - b)).toEqual(
      Array.from({ length: total }, (_, n) => n),
    );
    // The client reconnected; nothing replaced it (no reset, manual or not).
    expect(rt.connection.snapshot().generation).toBe(1);
  }, 120_000);

  /** A worker of `queue` whose handler writes down each payload it runs: the ledger. */
  const ledgerWorker = (queue: string) => {
    const ran: number[] = [];
    const worker = rt.workers.start<number, number>({
      queue,
      handler: (task) => {
        ran.push(task.payload);
        return task.payload;
      },
    });
    return { ran, worker };
  };

  /**
   * A long-lived worker whose server comes back with an empty store: the
   * queue's settings written after it start again at revision 1, below the
   * last one the worker applied before. A pause written then must still stop
   * the worker. The oracle is the handler's own ledger of what it ran.
   */
  it("a pause written after the reset stops the worker, and a resume starts it again", async () => {
    const queue = "reset_settings";
    const { ran, worker } = ledgerWorker(queue);
    try {
      // Six writes before the reset: the worker has applied revision 6.
      for (let n = 0; n < 3; n++) {
        await rt.queues.pause(queue);
        await rt.queues.resume(queue);
      }
      expect(await (await rt.jobs.submit({ queue, tasks: [1] })).done()).toMatchObject({
        status: "succeeded",
      });

      await server.restartEmpty();
      // The runtime works again: a job submitted now runs.
      await waitUntil(
        async () => {
          const job = await rt.jobs.submit({ queue, tasks: [2] }).catch(() => undefined);
          return (await job?.done())?.status === "succeeded";
        },
        { timeoutMs: 30_000, intervalMs: 500, message: "a job run after the reset" },
      );

      await rt.queues.pause(queue);
      // Read back raw by another client of the store: the pause is written, at a revision below 6.
      expect(await rt.queues.get(queue)).toMatchObject({ paused: true });
      const held = await rt.jobs.submit({ queue, tasks: [3] });
      // Nothing tells that a pause was seen: a paused worker only runs nothing. The barrier: a
      // job of an open queue, submitted after the held one, run by a worker of the same runtime;
      // a worker that took the pause for an old write would have started task 3 by then.
      const control = rt.workers.start<number, number>({ queue: `${queue}_open`, handler: (t) => t.payload });
      try {
        const open = await rt.jobs.submit({ queue: `${queue}_open`, tasks: [1] });
        expect(await open.done()).toMatchObject({ status: "succeeded" });
      } finally {
        await control.stop();
      }
      expect(ran).not.toContain(3);
      await rt.queues.resume(queue);
      expect(await held.done()).toMatchObject({ status: "succeeded" });
      expect(ran.filter((n) => n === 3)).toHaveLength(1);
    } finally {
      await worker.stop();
    }
  });

  /**
   * A watcher in another process read the job before the reset, and its
   * record watch is placed for the first time only after it: that first
   * placement cannot tell the store was made again, so the revisions read
   * before it are forgotten there too. The job's end, written in the new
   * store at a revision below the one the watcher read, must reach it.
   */
  it("a watcher whose record watch is first placed after the reset hears the lost job's end", async () => {
    const queue = "reset_first_watch";
    const held = gate();
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 2,
      handler: async (task, ctx) => {
        if (task.index >= 2) await Promise.race([held.opened, whenAborted(ctx.signal)]);
        return task.payload;
      },
    });
    const watchHeld = gate();
    const options = {
      servers: server.url,
      logger,
      connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 1000 },
      jobs: { leaseMs: 2000, cleanupIntervalMs: 0, takeOver: false },
    };
    const core = await createRuntimeCore(options);
    const inner = createNatsBroker(core, { retentionMs: 3600_000, holder: "watcher" });
    // Its record watch starts only once released: the watcher's reads come before it.
    const broker = spiedBroker(inner, (key, _n, _args, call) =>
      key === "watchRecordChanges" ? watchHeld.opened.then(call) : call(),
    ).broker;
    const other = await createRuntime({ ...options, broker });
    try {
      const lost = await rt.jobs.submit({
        queue,
        tasks: Array.from({ length: 20 }, (_, n) => n),
        ackWaitMs: 2000,
        stallAfterMs: 1000,
      });
      await waitUntil(() => lost.snapshot().done >= 2, { timeoutMs: 20_000, message: "two tasks done" });
      const watched = await other.jobs.get(lost.id);
      expect(watched?.snapshot().status).toBe("running");
      await server.restartEmpty();
      held.open();
      const ended = await lost.done();
      expect(ended).toMatchObject({ status: "failed" });
      watchHeld.open();
      const seenEnded = await within(watched!.done(), 15_000);
      expect(seenEnded).toMatchObject({ status: "failed", reason: ended.reason });
    } finally {
      watchHeld.open();
      await worker.stop();
      await other.stop();
      await core.stop();
    }
  }, 60_000);

  /**
   * The worker that runs the lost job's tasks hears its end, written in the
   * new store at a revision below every one it knew of the job: its
   * handlers' signals abort (their answers would be dropped anyway).
   */
  it("a worker holding the lost job's tasks hears its end: their handlers are aborted", async () => {
    const queue = "reset_worker";
    const aborted: number[] = [];
    const started: number[] = [];
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 2,
      handler: async (task, ctx) => {
        started.push(task.index);
        await whenAborted(ctx.signal);
        aborted.push(task.index);
        return task.payload;
      },
    });
    try {
      // Written several times before the reset: its revisions there are above its end's after it.
      for (let n = 0; n < 5; n++)
        await (await rt.jobs.submit({ queue: "reset_filler", tasks: [n] })).cancel("filler");
      const lost = await rt.jobs.submit({
        queue,
        tasks: Array.from({ length: 20 }, (_, n) => n),
        ackWaitMs: 2000,
        stallAfterMs: 1000,
      });
      await waitUntil(() => started.length === 2, { timeoutMs: 20_000, message: "two tasks held" });
      await server.restartEmpty();
      expect(await lost.done()).toMatchObject({ status: "failed" });
      await waitUntil(() => aborted.length === 2, {
        timeoutMs: 15_000,
        message: "the held handlers aborted by the job's end",
      });
      expect(aborted.sort()).toEqual([...started].sort());
    } finally {
      await worker.stop();
    }
  }, 60_000);

  /**
   * The other side of the reset: a queue paused before it loses its record
   * with the store; the runtime that paused it (its worker too) writes the
   * record back as last seen (`KeptQueueRecord`), pause included: the store
   * says paused again, a job submitted then waits, and a resume runs it on
   * the worker that applied the pause. Before the write-back the store said
   * open after the reset, and the worker had to run again on its own.
   */
  it("a pause lost with the store is written back, and a resume runs the worker again", async () => {
    const queue = "reset_lost_pause";
    const { ran, worker } = ledgerWorker(queue);
    try {
      expect(await (await rt.jobs.submit({ queue, tasks: [1] })).done()).toMatchObject({
        status: "succeeded",
      });
      await rt.queues.pause(queue);
      await server.restartEmpty();
      // Read raw: the record is stored again, paused.
      await waitUntil(async () => (await storedQueue(server.url, queue))?.paused === true, {
        timeoutMs: 30_000,
        intervalMs: 200,
        message: "the queue's record written back after the reset",
      });
      const job = await rt.jobs.submit({ queue, tasks: [2] });
      await rt.queues.resume(queue);
      await waitUntil(() => ran.includes(2), { timeoutMs: 10_000, message: "the task run after the resume" });
      expect(await job.done()).toMatchObject({ status: "succeeded" });
      expect(ran).toEqual([1, 2]);
    } finally {
      await worker.stop();
    }
  }, 60_000);
});
