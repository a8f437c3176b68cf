/**
 * A queue's shared consumers deleted by hand (`nats consumer rm`) under a
 * running runtime and its worker: the runtime had looked each up and kept
 * the answer, and work that needs the consumer must still run, with the
 * consumer made again. The oracles, read through a client of the test's
 * own: the consumer as the server lists it, the handlers' ledger against
 * what the test submitted, and the dead letters' count.
 */
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames, permitsConsumer } from "../../src/adapters/names.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { natsRawResults, tally } from "../harness/raw-results.ts";
import { useNatsRuntime } from "../harness/runtime.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe("a queue's shared consumer deleted by hand under a running runtime", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  useNatsRuntime({ name: "deleted", logger, jobs: { cleanupIntervalMs: 0 } }, (started) => {
    ({ server, rt } = started);
  });
  beforeAll(async () => {
    nc = await connect({ servers: server.url, name: "raw" });
    jsm = await jetstreamManager(nc);
  });
  afterAll(async () => {
    await nc?.close();
  });

  /** The consumer is on the server, as a raw client lists it. */
  const exists = async (stream: string, consumer: string): Promise<boolean> => {
    for await (const c of jsm.consumers.list(stream)) if (c.name === consumer) return true;
    return false;
  };
  const madeAgain = (stream: string, consumer: string) =>
    waitUntil(() => exists(stream, consumer), {
      timeoutMs: 15_000,
      message: `consumer ${consumer} on ${stream} made again`,
    });

  /** A worker of `queue` whose handler counts each index it runs, and hangs on `hangOn`. */
  const ledgerWorker = (queue: string, hangOn?: number) => {
    const ran = new Map<number, number>();
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 4,
      stopTimeoutMs: 100,
      maxTaskMs: 300,
      handler: (task) => {
        ran.set(task.payload, (ran.get(task.payload) ?? 0) + 1);
        if (task.payload === hangOn) return new Promise<never>(() => undefined);
        return task.payload;
      },
    });
    return { ran, worker };
  };

  it.each(["concurrency", "rate"] as const)(
    "a permit pool's %s consumer: the next job's tasks all run, the consumer made again",
    async (kind) => {
      const queue = `pool_${kind}`;
      const limit = kind === "rate" ? { ratePerSecond: 50 } : { maxConcurrency: 2 };
      await rt.queues.configure(queue, { ...limit, permitLeaseMs: 7000 });
      const { ran, worker } = ledgerWorker(queue);
      const first = await rt.jobs.submit({ queue, tasks: range(4) });
      expect(await within(first.done(), 20_000)).toMatchObject({ status: "succeeded", done: 4 });
      const consumer = permitsConsumer(queue, kind);
      await jsm.consumers.delete(names.permitsStream, consumer);
      expect(await exists(names.permitsStream, consumer)).toBe(false);

      const next = await rt.jobs.submit({ queue, tasks: range(10).map((n) => n + 100) });
      expect(await within(next.done(), 30_000)).toMatchObject({ status: "succeeded", done: 10, total: 10 });
      expect([...ran.keys()].sort((a, b) => a - b)).toEqual([...range(4), ...range(10).map((n) => n + 100)]);
      // Made again with the queue's settings: its permits' lease, every permit reusable.
      const { config } = await jsm.consumers.info(names.permitsStream, consumer);
      expect(config).toMatchObject({
        ack_wait: 7000 * 1e6,
        max_deliver: -1,
        filter_subject: names.permitsSubject(queue, kind),
      });
      await worker.stop();
    },
    60_000,
  );

  it("an agent target's permit pool consumer: the next job's tasks all run, the consumer made again", async () => {
    const queue = "pool_target";
    await rt.queues.configure(queue, { perTarget: { maxConcurrency: 2 } });
    await rt.agents.register({
      agentId: "agent-t",
      targets: ["https://t.example/v1"],
      current: "https://t.example/v1",
    });
    const ran = new Map<number, number>();
    const worker = rt.workers.start<number, number>({
      queue,
      agent: "agent-t",
      concurrency: 4,
      handler: (task) => {
        ran.set(task.payload, (ran.get(task.payload) ?? 0) + 1);
        return task.payload;
      },
    });
    const first = await rt.jobs.submit({ queue, tasks: range(4) });
    expect(await within(first.done(), 20_000)).toMatchObject({ status: "succeeded", done: 4 });
    const stream = names.targetPermitsStream(queue);
    const pools: string[] = [];
    for await (const c of jsm.consumers.list(stream)) pools.push(c.name);
    expect(pools).toHaveLength(1);
    const consumer = pools[0] as string;
    await jsm.consumers.delete(stream, consumer);
    expect(await exists(stream, consumer)).toBe(false);

    const next = await rt.jobs.submit({ queue, tasks: range(10).map((n) => n + 100) });
    expect(await within(next.done(), 30_000)).toMatchObject({ status: "succeeded", done: 10, total: 10 });
    expect([...ran.keys()].sort((a, b) => a - b)).toEqual([...range(4), ...range(10).map((n) => n + 100)]);
    expect(await exists(stream, consumer)).toBe(true);
    await worker.stop();
  }, 60_000);

  it("the dead-letters consumer: a task nobody answers is dead, its job ends, the consumer made again", async () => {
    const queue = "dead_gone";
    const { ran, worker } = ledgerWorker(queue, 3);
    const first = await rt.jobs.submit({ queue, tasks: range(2) });
    expect(await within(first.done(), 20_000)).toMatchObject({ status: "succeeded", done: 2 });
    const stream = names.advisoriesStream(queue);
    await jsm.consumers.delete(stream, "dead-letters");
    expect(await exists(stream, "dead-letters")).toBe(false);

    // Task 3 hangs past its lease on both deliveries: only its MAX_DELIVERIES advisory ends it.
    const next = await rt.jobs.submit({ queue, tasks: range(6), maxDeliver: 2, ackWaitMs: 400 });
    expect(await within(next.done(), 40_000)).toMatchObject({ done: 5, dead: 1, total: 6 });
    expect(ran.get(3)).toBe(2);
    const letters = await rt.jobs.deadLetters(next.id);
    expect(letters.map((l) => [l.index, l.source])).toEqual([[3, "advisory"]]);
    await madeAgain(stream, "dead-letters");
    await worker.stop();
  }, 60_000);

  it("a job's own consumer: the job does not hang; each task's answer is counted once", async () => {
    const queue = "own_gone";
    const ran = new Map<number, number>();
    const held = gate();
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 4,
      handler: async (task) => {
        ran.set(task.payload, (ran.get(task.payload) ?? 0) + 1);
        if (task.payload >= 5) await held.opened;
        return task.payload;
      },
    });
    // Not the lane's settings: a consumer of its own, named by the job's id.
    const job = await rt.jobs.submit({ queue, tasks: range(20), ackWaitMs: 5000, stallAfterMs: 1000 });
    await waitUntil(() => job.snapshot().done >= 5, { timeoutMs: 20_000, message: "five tasks done" });
    await jsm.consumers.delete(names.tasksStream(queue), job.id);
    held.open();

    const end = await within(job.done(), 45_000);
    expect(end).not.toBe("never");
    if (end === "never") return;
    // Made again over the tasks still stored, the job runs to its end; had it failed as lost, the
    // reason would have to say its consumer went.
    if (end.status === "failed") expect(end.reason).toMatch(/consumer is gone/);
    else expect(end).toMatchObject({ status: "succeeded", done: 20, failed: 0, dead: 0, total: 20 });
    expect([...ran.keys()].sort((a, b) => a - b)).toEqual(range(20));
    // The results stored, read raw: each index answered, and counted once by the job.
    const stored = await natsRawResults(nc, queue, job.id);
    expect([...tally(stored.map((r) => r.i)).keys()].sort((a, b) => a - b)).toEqual(range(20));
    await worker.stop();
  }, 60_000);
});
