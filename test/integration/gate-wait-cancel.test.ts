/**
 * A task waiting at its queue's gate (a concurrency limit reached) whose
 * job is cancelled gives its worker's slot back at once. It held the slot
 * until a permit came: another job's task pulled meanwhile waited for a
 * slot instead, gave up at each lease's end and went back, a delivery
 * spent each time (on a long wait, every delivery but the last). The
 * oracles: the server's count of the cancelled job's deliveries held, read
 * raw (its task is at the worker, in a slot), and the handler's ledger of
 * the attempts it ran.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { whenAborted } from "../../src/kernel/signals.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { keepAlives, unansweredDeliveries } from "../harness/raw-consumers.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

describe("a task at its queue's gate whose job is cancelled", () => {
  let server: NatsServerHandle;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server?.dispose();
  });

  const held = (queue: string, jobId: string) => unansweredDeliveries(server.url, queue, jobId);

  it("gives its slot back: the next job's task waits at the gate, its lease kept, and runs on its first delivery", async () => {
    const rt = await createRuntime({
      servers: server.url,
      logger: silentLogger(),
      jobs: { leaseMs: 2000, cleanupIntervalMs: 0, lane: false },
    });
    const queue = "gated";
    const long = gate();
    let kept: Awaited<ReturnType<typeof keepAlives>> | undefined;
    const ran: Array<{ job: string; attempt: number }> = [];
    await rt.queues.configure(queue, { maxConcurrency: 1 });
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 2,
      handler: async (task, ctx) => {
        ran.push({ job: task.jobId, attempt: task.attempt });
        if (task.payload === 0) await Promise.race([long.opened, whenAborted(ctx.signal)]);
        return task.payload;
      },
    });
    try {
      // Its task holds the queue's one permit, and one of the worker's two slots.
      const first = await rt.jobs.submit({ queue, tasks: [0] });
      kept = await keepAlives(server.url, queue);
      await waitUntil(() => ran.length === 1, { timeoutMs: 10_000, message: "the first task running" });
      // Its task takes the other slot and waits at the gate.
      const cancelled = await rt.jobs.submit({ queue, tasks: [1] });
      await waitUntil(async () => (await held(queue, cancelled.id)) === 1, {
        timeoutMs: 10_000,
        message: "the cancelled job's task at the worker",
      });
      await cancelled.cancel("at the gate");
      const next = await rt.jobs.submit({ queue, tasks: [2], ackWaitMs: 1000 });
      await waitUntil(async () => (await held(queue, next.id)) === 1, {
        timeoutMs: 10_000,
        message: "the next job's task at the worker",
      });
      // Its lease kept through three of its lengths, waiting at the gate (it went back at each
      // one's end, waiting for a slot, and was delivered again).
      await waitUntil(() => (kept?.span(next.id) ?? 0) >= 3000, {
        timeoutMs: 20_000,
        message: "the next job's waiting task kept through three leases",
      });
      long.open();
      expect(await within(next.done(), 20_000)).toMatchObject({ status: "succeeded", done: 1 });
      expect(await within(first.done(), 20_000)).toMatchObject({ status: "succeeded", done: 1 });
      // The cancelled job's task never ran; the next one's ran once, on its first delivery.
      expect(ran).toEqual([
        { job: first.id, attempt: 1 },
        { job: next.id, attempt: 1 },
      ]);
    } finally {
      long.open();
      await kept?.close();
      await worker.stop();
      await rt.stop();
    }
  }, 60_000);

  it("many tasks of one job at the gate at once: no listener warning from Node (each listens to the job's end)", async () => {
    const rt = await createRuntime({
      servers: server.url,
      logger: silentLogger(),
      jobs: { leaseMs: 2000, cleanupIntervalMs: 0, lane: false },
    });
    const queue = "gated-many";
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`);
    process.on("warning", onWarning);
    await rt.queues.configure(queue, { maxConcurrency: 1 });
    const first = gate();
    let started = 0;
    let kept = { tasks: (_consumer: string) => 0, close: async () => {} };
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 16,
      handler: async (task) => {
        started++;
        if (started === 1) await first.opened;
        return task.payload;
      },
    });
    try {
      const tasks = Array.from({ length: 14 }, (_, n) => n);
      const job = await rt.jobs.submit({ queue, tasks, ackWaitMs: 1000 });
      kept = await keepAlives(server.url, queue);
      // One runs, holding the permit; the pull loop waits at the gate with the next, the rest
      // buffered. Past half their lease those are handed over at once: 13 wait at the gate.
      await waitUntil(async () => started === 1 && (await held(queue, job.id)) === 14, {
        timeoutMs: 10_000,
        message: "14 tasks at the worker",
      });
      // Past half their lease, the buffered ones are handed over at once and wait at the gate,
      // each keeping its lease: all but the running one.
      await waitUntil(() => kept.tasks(job.id) >= 13, {
        timeoutMs: 10_000,
        message: "13 tasks kept at the gate",
      });
      first.open();
      expect(await within(job.done(), 30_000)).toMatchObject({ status: "succeeded", done: 14 });
      expect(warnings.filter((w) => w.includes("MaxListeners"))).toEqual([]);
    } finally {
      process.off("warning", onWarning);
      first.open();
      await kept.close();
      await worker.stop();
      await rt.stop();
    }
  }, 60_000);
});
