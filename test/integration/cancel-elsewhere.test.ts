/**
 * Cancels that meet what another runtime did. A cancel from a runtime that
 * opened the job a moment before: its actor has not counted the answers
 * stored yet (its results feed is catching up), and the record's counts are
 * up to a second behind (progress is written once a second); the supervisor
 * has counted them all, and the record it leaves says so. A cancel through a
 * handle whose job ended and was then redriven elsewhere: it ends the
 * reopened job. The oracles: the handlers' ledger, the results read back
 * from the stream and the record as another runtime reads it.
 */
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsRawResults } from "../harness/raw-results.ts";
import { gate, waitUntil } from "../harness/wait.ts";

let server: NatsServerHandle;
const runtimes: Runtime[] = [];
const runtime = async () => {
  const rt = await createRuntime({ servers: server.url, logger: silentLogger() });
  runtimes.push(rt);
  return rt;
};
beforeAll(async () => {
  server = await startNatsServer();
});
afterAll(async () => {
  for (const rt of runtimes.reverse()) await rt.stop().catch(() => undefined);
  await server?.dispose();
});

it("a cancel from a runtime that has not counted every answer yet: its answer, its event and the record count every answer stored", async () => {
  const submitter = await runtime();
  const workers = await runtime();
  const observer = await runtime();
  const held = gate();
  const answered = new Set<number>();
  const worker = workers.workers.start<{ n: number }, number>({
    queue: "cancelcounts",
    concurrency: 64,
    stopTimeoutMs: 500,
    handler: async (task) => {
      // The first 40 are answered; the others wait until after the cancel.
      if (task.payload.n >= 40) await held.opened;
      answered.add(task.payload.n);
      return task.payload.n;
    },
  });
  try {
    const job = await submitter.jobs.submit({
      queue: "cancelcounts",
      tasks: Array.from({ length: 100 }, (_, n) => ({ n })),
    });
    await waitUntil(() => answered.size === 40, { timeoutMs: 10_000, message: "40 answered" });
    // Their results stored (the worker's batch window, a publish), the record's progress not yet.
    const raw = await connect({ servers: server.url });
    await waitUntil(async () => (await natsRawResults(raw, "cancelcounts", job.id)).length === 40, {
      timeoutMs: 10_000,
      message: "40 results stored",
    });
    await raw.close();
    const events = observer.jobs.events({ queue: "cancelcounts" });
    const opened = await observer.jobs.get(job.id);
    // The canceller's own answer and the event counted every answer stored before the cancel.
    expect(await opened!.cancel("enough")).toMatchObject({ status: "failed", done: 40 });
    for await (const e of events)
      if (e.jobId === job.id && e.type === "cancelled") {
        expect(e.counts).toMatchObject({ done: 40 });
        break;
      }
    const stored: number[] = [];
    for await (const r of opened!.results()) if (r.ok) stored.push(r.index);
    expect(stored).toHaveLength(40);
    expect(await job.done()).toMatchObject({ status: "failed", reason: "cancelled: enough", done: 40 });
    // The record as any runtime reads it, once the supervisor heard the cancel.
    const reader = await runtime();
    await waitUntil(async () => (await reader.jobs.record(job.id))?.counts.done === 40, {
      timeoutMs: 5000,
      message: "the record's counts are the answers stored",
    });
    expect(await reader.jobs.record(job.id)).toMatchObject({
      status: "failed",
      reason: "cancelled: enough",
      counts: { done: 40, failed: 0, dead: 0 },
    });
  } finally {
    held.open();
    await worker.stop();
  }
}, 60_000);

for (const size of [1, 3])
  it(`cancel() through a handle whose job ended, then was redriven elsewhere, ends the reopened job (${size} task(s))`, async () => {
    const submitter = await runtime();
    const operator = await runtime();
    const workers = await runtime();
    const queue = `cancelredriven${size}`;
    let failing = true;
    const held = gate();
    let heldRuns = 0;
    const worker = workers.workers.start<{ n: number }, number>({
      queue,
      stopTimeoutMs: 500,
      handler: async (task) => {
        if (failing && task.payload.n === 0) throw new Error("boom");
        if (!failing) {
          heldRuns++;
          await held.opened;
        }
        return task.payload.n;
      },
    });
    try {
      const job = await submitter.jobs.submit({
        queue,
        tasks: Array.from({ length: size }, (_, n) => ({ n })),
        backoff: [5],
        ...(size === 1 ? {} : { maxDeliver: 2 }),
      });
      expect(await job.done()).toMatchObject({ status: "failed" });
      failing = false;
      await operator.jobs.redrive(job.id);
      await waitUntil(() => heldRuns === 1, { timeoutMs: 10_000, message: "the redriven task runs" });
      const cancelled = await job.cancel("stop the redrive");
      expect(cancelled).toMatchObject({ status: "failed", reason: "cancelled: stop the redrive" });
      expect(await operator.jobs.record(job.id)).toMatchObject({
        status: "failed",
        reason: "cancelled: stop the redrive",
      });
    } finally {
      held.open();
      await worker.stop();
    }
  }, 60_000);
