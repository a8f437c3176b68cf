/**
 * Delayed tasks survive a restart of the server and of every runtime (NATS
 * only: a memory server does not outlive its process). A runtime submits
 * delayed jobs and stops; the nats-server is stopped and started again on
 * its store while every task is still held; a new runtime, started before
 * any task is due, runs them. Oracles: the handlers' ledger (each task once,
 * never before its time) and the delayed stream read by the test's own
 * nats.js client.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

const options = {
  logger: silentLogger(),
  // A stopped runtime's supervision lease runs out soon: the new one takes its jobs over.
  jobs: { leaseMs: 1000, cleanupIntervalMs: 0 },
  connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 100 },
} as const;

// With `memoryConsumers` the jobs' consumers are gone after the restart while their tasks are
// still held: the runtime that takes them over must make them again, or nothing is delivered.
describe.each([false, true])(
  "delayed tasks across a restart of the server and of every runtime (memoryConsumers: %s)",
  (memoryConsumers) => {
    let server: NatsServerHandle;
    const runtimes: Runtime[] = [];
    beforeAll(async () => {
      server = await startNatsServer();
    });
    afterAll(async () => {
      for (const rt of runtimes) await rt.stop();
      await server?.dispose();
    });

    const heldOnServer = async (queue: string, jobId: string): Promise<number> => {
      const nc = await connect({ servers: server.url, name: "raw-delayed" });
      try {
        const jsm = await jetstreamManager(nc);
        const subject = `jetstate.delayed.${queue}.${jobId}`;
        const info = await jsm.streams.info(`jetstate_delayed_${queue}`, { subjects_filter: subject });
        return info.state.subjects?.[subject] ?? 0;
      } finally {
        await nc.close();
      }
    };

    it("each task is handled once, not before its time, and done() resolves", async () => {
      const queue = memoryConsumers ? "restartedmem" : "restarted";
      const total = 30;
      const first = Date.now() + 5000;
      const due = Array.from({ length: total }, (_, n) => first + n * 50);
      const jobs = { ...options.jobs, memoryConsumers };
      const submitter = await createRuntime({ ...options, jobs, servers: server.url, name: "submitter" });
      const spread = await submitter.jobs.submit({
        queue,
        tasks: due.map((_, n) => n),
        taskRunAt: due,
        idempotencyKey: "spread",
      });
      const whole = await submitter.jobs.submit({ queue, tasks: [100, 101, 102], runAt: first + 500 });
      expect(await heldOnServer(queue, spread.id)).toBe(total);
      expect(await heldOnServer(queue, whole.id)).toBe(3);
      await submitter.stop();

      await server.stop();
      await server.restart();
      expect(await heldOnServer(queue, spread.id)).toBe(total);

      const ledger: { job: string; index: number; at: number }[] = [];
      const rt = await createRuntime({ ...options, jobs, servers: server.url, name: "after" });
      runtimes.push(rt);
      // The point of the test: nothing was due before every process that held it was gone.
      if (Date.now() >= first) throw new Error("the restart took longer than the delay: nothing was held");
      const worker = rt.workers.start<number, number>({
        queue,
        concurrency: 8,
        handler: (task) => {
          ledger.push({ job: task.jobId, index: task.index, at: Date.now() });
          return task.payload;
        },
      });
      const spreadHere = await rt.jobs.get(spread.id);
      const wholeHere = await rt.jobs.get(whole.id);
      expect(await spreadHere?.done()).toMatchObject({
        status: "succeeded",
        done: total,
        failed: 0,
        dead: 0,
      });
      expect(await wholeHere?.done()).toMatchObject({ status: "succeeded", done: 3 });
      await worker.stop();

      const ofSpread = ledger.filter((h) => h.job === spread.id);
      expect(ofSpread.map((h) => h.index).sort((a, b) => a - b)).toEqual(due.map((_, n) => n));
      for (const h of ofSpread) expect(h.at).toBeGreaterThanOrEqual(due[h.index] ?? 0);
      const ofWhole = ledger.filter((h) => h.job === whole.id);
      expect(ofWhole.map((h) => h.index).sort()).toEqual([0, 1, 2]);
      for (const h of ofWhole) expect(h.at).toBeGreaterThanOrEqual(first + 500);
      expect(await heldOnServer(queue, spread.id)).toBe(0);
      expect(await heldOnServer(queue, whole.id)).toBe(0);
    });
  },
);
