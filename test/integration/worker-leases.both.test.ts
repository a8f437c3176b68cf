import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createRuntime, type Runtime } from "../../src/index.ts";
import { createMemoryBroker, createTestRuntime, type MemoryBroker } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";

/**
 * Issue #12 items 6 and 7b, on both brokers: a slow handler's lease is
 * extended while it runs (it runs once), a hung one is given up after
 * `maxTaskMs`, a redelivery is logged, progress reaches the job's handle, and
 * `stop()` keeps its timeout even when a handler ignores its signal. Handler
 * runs are counted in the handlers' own ledgers.
 */

/** Settles like `promise`, or rejects once `ms` passed. */
const within = <T>(promise: Promise<T>, ms: number, what: string): Promise<T> =>
  new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });

/** A promise and its resolver: a handler that waits for the test. */
const gate = <T = void>() => {
  let open!: (value: T) => void;
  const opened = new Promise<T>((resolve) => {
    open = resolve;
  });
  return { opened, open };
};

describe.each(["memory", "nats"] as const)("worker leases and stop (%s)", (kind) => {
  let server: NatsServerHandle | undefined;
  let nc: NatsConnection | undefined;
  let memory: MemoryBroker | undefined;
  let rt: Runtime;
  const logged: Array<Record<string, unknown>> = [];
  const logger = pino({ level: "warn" }, { write: (line: string) => void logged.push(JSON.parse(line)) });
  beforeAll(async () => {
    if (kind === "nats") {
      server = await startNatsServer();
      nc = await connect({ servers: server.url });
      rt = await createRuntime({ servers: server.url, logger });
    } else {
      memory = createMemoryBroker();
      rt = await createTestRuntime({ logger, broker: memory });
    }
  });
  afterAll(async () => {
    await rt?.stop();
    await nc?.close();
    await server?.dispose();
  });

  /** Results messages stored for the job, read from the store itself. */
  const storedResultMessages = async (queue: string, jobId: string): Promise<number> => {
    const subject = `jetstate.results.${queue}.${jobId}`;
    if (memory) return memoryServerState(memory.server).results.read(subject).length;
    const jsm = await jetstreamManager(nc!);
    const info = await jsm.streams.info("jetstate_results", { subjects_filter: subject });
    return info.state.subjects?.[subject] ?? 0;
  };

  it("a handler slower than ackWaitMs, without heartbeats, runs once: the worker extends its lease", async () => {
    const runs: number[] = [];
    const worker = rt.workers.start<number, number>({
      queue: "slow",
      concurrency: 4,
      handler: async (task) => {
        runs.push(task.index);
        // The work itself: three ack waits long.
        await delay(1200);
        return task.payload;
      },
    });
    try {
      const job = await rt.jobs.submit({ queue: "slow", tasks: [0, 1], ackWaitMs: 400, maxDeliver: 5 });
      const final = await within(job.done(), 15_000, "the job ends");
      expect(final).toMatchObject({ status: "succeeded", done: 2 });
      expect(runs.sort()).toEqual([0, 1]);
    } finally {
      await worker.stop();
    }
  });

  it("a redelivery is logged at warn with its attempt", async () => {
    const worker = rt.workers.start<number, number>({
      queue: "again",
      handler: (task) => {
        if (task.attempt === 1) throw new Error("not yet");
        return task.payload;
      },
    });
    try {
      const job = await rt.jobs.submit({ queue: "again", tasks: [7], backoff: [0] });
      expect(await within(job.done(), 15_000, "the job ends")).toMatchObject({ status: "succeeded" });
      const line = logged.find((l) => l.jobId === job.id && l.msg === "task redelivered");
      expect(line).toMatchObject({ level: 40, index: 0, attempt: 2 });
    } finally {
      await worker.stop();
    }
  });

  it("a handler running past maxTaskMs is hung: signal aborted, task redelivered, its late answer ignored", async () => {
    const runs: Array<{ attempt: number; aborted: boolean }> = [];
    const late = gate<number>();
    const worker = rt.workers.start<number, number>({
      queue: "hung",
      maxTaskMs: 300,
      handler: async (task, ctx) => {
        const run = { attempt: task.attempt, aborted: false };
        runs.push(run);
        ctx.signal.addEventListener("abort", () => {
          run.aborted = true;
        });
        // The first run ignores its signal and answers only when the test says so.
        if (task.attempt === 1) return late.opened;
        // Read as it answers: the job's end aborts every signal afterwards.
        run.aborted = ctx.signal.aborted;
        return task.payload * 10;
      },
    });
    try {
      const job = await rt.jobs.submit({ queue: "hung", tasks: [4], ackWaitMs: 300, maxDeliver: 3 });
      const final = await within(job.done(), 15_000, "the job ends");
      expect(final).toMatchObject({ status: "succeeded", done: 1, failed: 0, dead: 0 });
      expect(runs.map((r) => r.attempt)).toEqual([1, 2]);
      expect(runs[0]!.aborted).toBe(true);
      expect(logged.find((l) => l.jobId === job.id && /hung/.test(String(l.msg)))).toMatchObject({
        level: 40,
        index: 0,
        attempt: 1,
      });
      const stored = await storedResultMessages(job.queue, job.id);
      late.open(-1);
      await waitUntil(() => logged.some((l) => l.jobId === job.id && /late answer/.test(String(l.msg))), {
        timeoutMs: 5000,
        message: "the late answer was seen and ignored",
      });
      expect(await storedResultMessages(job.queue, job.id)).toBe(stored);
      const results = [];
      for await (const r of job.results()) results.push(r);
      expect(results).toEqual([{ taskId: `${job.id}.0`, index: 0, ok: true, result: 40 }]);
    } finally {
      await worker.stop();
    }
  });

  it("stop() keeps stopTimeoutMs while a handler ignores its signal; the task goes to another worker, the late answer is not counted", async () => {
    const runs: Array<{ worker: string; attempt: number }> = [];
    const late = gate<number>();
    const started = gate();
    const stubborn = rt.workers.start<number, number>({
      queue: "stubborn",
      stopTimeoutMs: 300,
      handler: (task) => {
        runs.push({ worker: "stubborn", attempt: task.attempt });
        started.open();
        return late.opened;
      },
    });
    // ackWaitMs bounds how long the released task may sit in the stopped worker's last pull request.
    const job = await rt.jobs.submit({ queue: "stubborn", tasks: [5], maxDeliver: 5, ackWaitMs: 1000 });
    await within(started.opened, 10_000, "the stubborn handler runs");
    await within(stubborn.stop(), 5000, "stop() resolves although the handler still runs");
    expect(stubborn.stats()).toMatchObject({ inFlight: 0, processed: 0, released: 1 });
    const next = rt.workers.start<number, number>({
      queue: "stubborn",
      handler: (task) => {
        runs.push({ worker: "next", attempt: task.attempt });
        return task.payload * 100;
      },
    });
    try {
      const final = await within(job.done(), 15_000, "the job ends");
      expect(final).toMatchObject({ status: "succeeded", done: 1, failed: 0, dead: 0 });
      expect(runs.map((r) => r.worker)).toEqual(["stubborn", "next"]);
      const stored = await storedResultMessages(job.queue, job.id);
      expect(stored).toBe(1);
      late.open(-1);
      await waitUntil(() => logged.some((l) => l.jobId === job.id && /late answer/.test(String(l.msg))), {
        timeoutMs: 5000,
        message: "the late answer was seen and ignored",
      });
      expect(await storedResultMessages(job.queue, job.id)).toBe(1);
      expect(stubborn.stats()).toMatchObject({ processed: 0, failed: 0 });
    } finally {
      await next.stop();
    }
  });

  it("ctx.progress(info) reaches handle.onProgress with the task's index and id", async () => {
    const sent: Array<{ index: number; step: number }> = [];
    const received: Array<{ taskId: string; index: number; info: unknown }> = [];
    let heard = false;
    const worker = rt.workers.start<number, number>({
      queue: "progress",
      handler: async (task, ctx) => {
        // Notes are not stored: keep reporting until the watcher has heard one.
        for (let step = 0; !heard && !ctx.signal.aborted && step < 500; step++) {
          sent.push({ index: task.index, step });
          ctx.progress({ step });
          await delay(10);
        }
        return task.payload;
      },
    });
    try {
      const job = await rt.jobs.submit({ queue: "progress", tasks: [3] });
      const stop = job.onProgress((note) => {
        received.push(note);
        heard = true;
      });
      const final = await within(job.done(), 15_000, "the job ends");
      stop();
      expect(final).toMatchObject({ status: "succeeded", done: 1 });
      expect(received.length).toBeGreaterThan(0);
      for (const note of received) {
        expect(note).toMatchObject({ taskId: `${job.id}.0`, index: 0 });
        const step = (note.info as { step: number }).step;
        expect(sent).toContainEqual({ index: 0, step });
      }
    } finally {
      await worker.stop();
    }
  });
});
