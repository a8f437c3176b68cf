import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsRawResults, tally } from "../harness/raw-results.ts";
import { delay, waitUntil, within } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");

/** A handler whose tasks from `holdFrom` on wait for `open()`; it counts every call in its own ledger. */
const gatedHandler = (holdFrom: number) => {
  const ledger = new Map<number, number>();
  let open: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const handler = async (task: { index: number; payload: number }) => {
    ledger.set(task.index, (ledger.get(task.index) ?? 0) + 1);
    if (task.index >= holdFrom) await gate;
    return task.payload + 1;
  };
  return { ledger, handler, open: () => open() };
};

/**
 * "Outgrowing one machine", items 2 and 3, on one server: what a leader
 * election does to a client, made on purpose. A consumer that disappears
 * under a pull loop (a new leader that does not know the loop's pull
 * requests), and JetStream that does not answer for a few seconds while the
 * connection stays up (no stream leader yet).
 */
describe("a consumer or JetStream lost for a while", () => {
  let server: NatsServerHandle;
  let raw: NatsConnection;
  let rt: Runtime | undefined;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterEach(async () => {
    await rt?.stop();
    rt = undefined;
    await raw?.close();
  });
  afterAll(async () => {
    await server?.dispose();
  });

  const start = async () => {
    rt = await createRuntime({
      servers: server.url,
      logger,
      connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 1000 },
      jobs: { cleanupIntervalMs: 0 },
    });
    return rt;
  };

  it("a job whose results feed lost its consumer still ends (the pull loop notices and starts again)", async () => {
    const rt = await start();
    const gated = gatedHandler(5);
    const worker = rt.workers.start<number, number>({
      queue: "feed",
      concurrency: 2,
      handler: gated.handler,
    });
    const job = await rt.jobs.submit({ queue: "feed", tasks: Array.from({ length: 10 }, (_, n) => n) });
    await waitUntil(() => job.snapshot().done === 5, { timeoutMs: 20_000, message: "five tasks done" });

    // The job's results feed reads through an ephemeral consumer of the results stream: delete it
    // under the loop, as a lost leader loses the loop's pull requests.
    raw = await connect({ servers: server.url, name: "raw" });
    const jsm = await jetstreamManager(raw);
    const feeds: string[] = [];
    for await (const c of jsm.consumers.list(names.resultsStream)) feeds.push(c.name);
    expect(feeds).toHaveLength(1);
    await jsm.consumers.delete(names.resultsStream, feeds[0] ?? "");
    gated.open();

    // With nats.js's defaults the loop went on pulling from the deleted consumer for good.
    const final = await within(job.done(), 20_000);
    expect(final).toMatchObject({ status: "succeeded", done: 10, failed: 0, dead: 0 });
    await worker.stop();
    const stored = await natsRawResults(raw, "feed", job.id);
    expect([...tally(stored.map((e) => e.i)).values()].every((n) => n === 1)).toBe(true);
    expect(stored).toHaveLength(10);
  }, 60_000);

  it("a job's task consumer gone for a moment (as during an election) does not end the job for its workers", async () => {
    const rt = await start();
    const queue = "blink";
    // Two tasks held at the gate, two slots free: the worker keeps a pull open on the consumer.
    const gated = gatedHandler(5);
    const worker = rt.workers.start<number, number>({ queue, concurrency: 4, handler: gated.handler });
    // A job's own consumer (a lane job has none to lose).
    const job = await rt.jobs.submit({ queue, tasks: Array.from({ length: 7 }, (_, n) => n), lane: false });
    await waitUntil(() => job.snapshot().done === 5 && gated.ledger.size === 7, {
      timeoutMs: 20_000,
      message: "five tasks done, two held",
    });

    // The server says "consumer not found" while a consumer's new leader is elected. Made here
    // by deleting the job's consumer under the worker and making it again as it was: the job
    // runs on (its record says so), and the worker must go on pulling.
    raw = await connect({ servers: server.url, name: "raw" });
    const jsm = await jetstreamManager(raw);
    const stream = names.tasksStream(queue);
    // The record has the five (progress is written at most once a second): after this, no
    // record change is due until a held task answers.
    await waitUntil(
      async () => {
        const stored = await jsm.streams.getMessage(`KV_${names.jobsBucket}`, {
          last_by_subj: `$KV.${names.jobsBucket}.${job.id}`,
        });
        return stored?.json<{ counts: { done: number } }>().counts.done === 5;
      },
      { timeoutMs: 10_000, message: "the record to say five done" },
    );
    // Past the once-a-second progress write: a write still due would send the worker back to the job.
    await delay(1200);
    const { config } = await jsm.consumers.info(stream, job.id);
    await jsm.consumers.delete(stream, job.id);
    // The moment the consumer is gone (the election): the worker's pull meets no consumer in it.
    await delay(500);
    await jsm.consumers.add(stream, config);
    // Nothing answers meanwhile (the held tasks wait at the gate), so no record change can
    // send the worker back to the job: it must come back by itself. The server's view: a pull
    // registered, or tasks delivered, on the consumer made again. Before, the worker took the
    // deletion for the job's end and never pulled it again.
    await waitUntil(
      async () => {
        const info = await jsm.consumers.info(stream, job.id);
        return info.num_waiting + info.num_ack_pending > 0;
      },
      { timeoutMs: 10_000, message: "the worker pulling from the job's consumer again" },
    );
    gated.open();

    const final = await within(job.done(), 20_000);
    expect(final).toMatchObject({ status: "succeeded", done: 7, failed: 0, dead: 0 });
    await worker.stop();
    // The held two ran again from the consumer made again (their first leases went with the old one).
    expect([...gated.ledger.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    const stored = await natsRawResults(raw, queue, job.id);
    expect(new Set(stored.map((e) => e.i)).size).toBe(7);
  }, 60_000);

  it("results published while JetStream does not answer land once: no task runs twice", async () => {
    const rt = await start();
    const queue = "nojs";
    const holdFrom = 10;
    const gated = gatedHandler(holdFrom);
    const worker = rt.workers.start<number, number>({ queue, concurrency: 4, handler: gated.handler });
    const total = 20;
    // The ack wait outlasts the test: a task handled twice here is one whose results were given up.
    const job = await rt.jobs.submit({
      queue,
      tasks: Array.from({ length: total }, (_, n) => n),
      ackWaitMs: 60_000,
    });
    raw = await connect({ servers: server.url, name: "raw" });
    const jsm = await jetstreamManager(raw);
    // Every task before the gate answered and acked (the server's ack floor says so), four held.
    await waitUntil(
      async () => {
        const info = await jsm.consumers.info(names.tasksStream(queue), job.id);
        return info.ack_floor.stream_seq >= holdFrom && gated.ledger.size >= holdFrom + 4;
      },
      { timeoutMs: 20_000, message: "the first ten acked, four held" },
    );
    await raw.close();

    // Connected, but JetStream does not answer: what a client sees between two stream leaders.
    await server.restart({ jetstream: false });
    gated.open();
    // Longer than the old ~1.5 s of retries, shorter than publishRetryMs (15 s) with the restart.
    await delay(3000);
    await server.restart();

    const final = await within(job.done(), 45_000);
    expect(final).toMatchObject({ status: "succeeded", done: total, failed: 0, dead: 0 });
    await worker.stop();
    // The handlers' ledger: each task ran once (a dropped batch is released and runs again).
    expect([...gated.ledger.entries()].filter(([, n]) => n !== 1)).toEqual([]);
    expect(gated.ledger.size).toBe(total);
    raw = await connect({ servers: server.url, name: "raw" });
    const stored = await natsRawResults(raw, queue, job.id);
    expect([...tally(stored.map((e) => e.i)).entries()].filter(([, n]) => n !== 1)).toEqual([]);
    expect(stored).toHaveLength(total);
  }, 90_000);
});
