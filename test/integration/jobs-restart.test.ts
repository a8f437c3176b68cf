import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsRawResults } from "../harness/raw-results.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

// With `memoryConsumers` the restart loses the job's consumer (the stream keeps its tasks): the
// job's supervisor must make it again. On disk it survives.
describe.each([false, true])(
  "nats-server killed (SIGKILL) and restarted mid-job (memoryConsumers: %s)",
  (memoryConsumers) => {
    let server: NatsServerHandle;
    let rt: Runtime;
    beforeAll(async () => {
      server = await startNatsServer();
      rt = await createRuntime({
        servers: server.url,
        logger,
        connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 100, operationTimeoutMs: 20_000 },
        jobs: { memoryConsumers },
      });
    });
    afterAll(async () => {
      await rt?.stop();
      await server?.dispose();
    });

    it("finishes with no task lost and none counted twice", async () => {
      const total = 3000;
      const handled = new Map<number, number>();
      const workers = [1, 2].map(() =>
        rt.workers.start<number, number>({
          queue: memoryConsumers ? "survivemem" : "survive",
          concurrency: 16,
          handler: async (task) => {
            handled.set(task.index, (handled.get(task.index) ?? 0) + 1);
            // Slow enough that the kill lands mid-job.
            await new Promise((r) => setTimeout(r, 2));
            return task.payload * 3;
          },
        }),
      );
      const job = await rt.jobs.submit({
        queue: memoryConsumers ? "survivemem" : "survive",
        tasks: Array.from({ length: total }, (_, n) => n),
        ackWaitMs: 2000,
      });
      await waitUntil(() => job.snapshot().done >= total / 5, { timeoutMs: 30_000, message: "a fifth done" });
      // Where the job's consumer is kept, read from the server.
      const admin = await connect({ servers: server.url, name: "consumer-info" });
      const info = await (await jetstreamManager(admin)).consumers.info(
        `jetstate_tasks_${job.queue}`,
        job.id,
      );
      await admin.close();
      expect(info.config.mem_storage ?? false).toBe(memoryConsumers);
      await server.kill();
      await waitUntil(() => rt.connection.state === "reconnecting", {
        timeoutMs: 10_000,
        message: "reconnecting",
      });
      const doneAtKill = job.snapshot().done;
      expect(doneAtKill).toBeLessThan(total);
      await server.restart();
      const final = await job.done();
      await Promise.all(workers.map((w) => w.stop()));
      expect(final).toMatchObject({ status: "succeeded", done: total, failed: 0, dead: 0, total });
      // Counted once, against what the server stores: a consumer of this test's own on the results
      // stream, duplicates included (results() de-duplicates by index, so it could not tell).
      const reader = await connect({ servers: server.url, name: "raw-results" });
      const stored = await natsRawResults(reader, job.queue, job.id)
        .then((entries) => new Set(entries.map((e) => e.i)))
        .finally(() => reader.close());
      const all = Array.from({ length: total }, (_, n) => n);
      expect([...stored].sort((a, b) => a - b)).toEqual(all);
      expect(final.done + final.failed + final.dead).toBe(stored.size);
      // Every task reached a handler; some more than once (in flight at the kill, redelivered) is
      // allowed: counted once all the same.
      expect([...handled.keys()].sort((a, b) => a - b)).toEqual(all);
      // The answers, by index (results() is fine for values: it shows one per index).
      let wrong = 0;
      for await (const r of job.results()) if (!r.ok || r.result !== r.index * 3) wrong++;
      expect(wrong).toBe(0);
      expect(await server.connectionCount()).toBe(1);
      expect(rt.connection.snapshot().generation).toBe(1); // the client reconnected; it was not replaced
    });
  },
);
