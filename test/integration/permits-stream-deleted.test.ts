/**
 * A queue's permits stream deleted by hand (`nats stream rm`) under a
 * running runtime and its worker: like a pool's consumer deleted by hand,
 * the queue's work must not stop for good. The oracles: the handlers'
 * ledger against what the test submitted, and the stream as a raw client of
 * the test's own sees it.
 */
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { capturedLog } from "../harness/log-lines.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { useNatsRuntime } from "../harness/runtime.ts";
import { within } from "../harness/wait.ts";

const names = brokerNames("jetstate");
const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const { lines, logger } = capturedLog("warn");

describe("a queue's permits stream deleted by hand under a running worker", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  useNatsRuntime({ name: "stream-gone", logger, jobs: { cleanupIntervalMs: 0 } }, (started) => {
    ({ server, rt } = started);
  });
  beforeAll(async () => {
    nc = await connect({ servers: server.url, name: "raw" });
    jsm = await jetstreamManager(nc);
  });
  afterAll(async () => {
    await nc?.close();
  });

  it("the next job's tasks all run", async () => {
    const queue = "stream_gone";
    await rt.queues.configure(queue, { maxConcurrency: 2, permitLeaseMs: 7000 });
    const ran = new Map<number, number>();
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 4,
      handler: (task) => {
        ran.set(task.payload, (ran.get(task.payload) ?? 0) + 1);
        return task.payload;
      },
    });
    const first = await rt.jobs.submit({ queue, tasks: range(4) });
    expect(await within(first.done(), 20_000)).toMatchObject({ status: "succeeded", done: 4 });
    await jsm.streams.delete(names.permitsStream);

    const next = await rt.jobs.submit({ queue, tasks: range(10).map((n) => n + 100) });
    const end = await within(next.done(), 30_000);
    // Read raw: the stream (made again by the runtime or not) and the permits it stores.
    const info = await jsm.streams.info(names.permitsStream).catch(() => undefined);
    const warns = lines.map((l) => l.msg);
    expect(
      { end, ran: ran.size },
      `permits stream back: ${info !== undefined}, permits stored: ${info?.state.messages}; warns: ${JSON.stringify(warns)}`,
    ).toMatchObject({ end: { status: "succeeded", done: 10, total: 10 }, ran: 14 });
    await worker.stop();
  }, 60_000);
});
