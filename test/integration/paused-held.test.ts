/**
 * A task pulled while its queue is paused is held by the worker that pulled
 * it, its lease kept, and run once the queue is resumed: not handed back.
 * Each worker that pulled it handed it back (a nak) and waited, and the
 * server gave it to the next worker's waiting pull: a delivery spent at
 * each, so with as many workers as deliveries its first run was on its last
 * delivery (one failure, and it died). The oracles: the server's count of
 * the job's deliveries held, read raw, and the attempt the handler ran.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { unansweredDeliveries } from "../harness/raw-consumers.ts";
import { waitUntil, within } from "../harness/wait.ts";

describe("a task pulled while its queue is paused", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({ servers: server.url, name: "paused", logger: silentLogger() });
  });
  afterAll(async () => {
    await rt?.stop();
    await server?.dispose();
  });

  it("is held by its worker and runs on its first delivery once resumed", async () => {
    const queue = "paused-held";
    await rt.queues.pause(queue);
    const attempts: number[] = [];
    const workers = Array.from({ length: 4 }, () =>
      rt.workers.start<number, number>({
        queue,
        handler: (task) => {
          attempts.push(task.attempt);
          return task.payload;
        },
      }),
    );
    try {
      const job = await rt.jobs.submit({ queue, tasks: [7], lane: false });
      await waitUntil(async () => (await unansweredDeliveries(server.url, queue, job.id)) === 1, {
        timeoutMs: 10_000,
        message: "the task held by a worker while its queue is paused",
      });
      await rt.queues.resume(queue);
      expect(await within(job.done(), 20_000)).toMatchObject({ status: "succeeded", done: 1 });
      expect(attempts).toEqual([1]);
    } finally {
      for (const w of workers) await w.stop();
    }
  }, 40_000);
});
