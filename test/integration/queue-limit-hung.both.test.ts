/**
 * A handler that never settles, given up at `maxTaskMs` on a queue with a
 * concurrency limit: its task is handed on (its lease left to run out) and
 * its worker's slot freed, and its concurrency permit must go with them. It
 * was kept, renewed for as long as the process lived: with the queue's one
 * permit held so, nothing of the queue ran again in any process, the hung
 * task's own retry included. The oracle is the handlers' ledger.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createTestRuntime } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { gate, waitUntil } from "../harness/wait.ts";

let nats: NatsServerHandle;
beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.dispose();
});

describe.each(["memory", "nats"])("a hung handler on a queue limited to one at a time, on %s", (broker) => {
  let rt: Runtime;
  afterAll(async () => {
    await rt?.stop();
  });

  it("gives its permit back when given up: the next task runs, and the hung one runs again", async () => {
    rt =
      broker === "memory"
        ? await createTestRuntime({ name: "hung", broker: createMemoryBroker() })
        : await createRuntime({ servers: nats.url, name: "hung", logger: silentLogger() });
    await rt.queues.configure("hung", { maxConcurrency: 1 });
    const never = gate();
    const ran: string[] = [];
    const worker = rt.workers.start<number, number>({
      queue: "hung",
      concurrency: 2,
      maxTaskMs: 300,
      handler: async (task) => {
        ran.push(`${task.payload}:${task.attempt}`);
        // The first job's task, on its first delivery, ignores its signal and never ends.
        if (task.payload === 0 && task.attempt === 1) await never.opened;
        return task.payload;
      },
    });
    try {
      const first = await rt.jobs.submit({ queue: "hung", tasks: [0], ackWaitMs: 1000, lane: false });
      await waitUntil(() => ran.length === 1, { timeoutMs: 10_000, message: "task 0 running" });
      const next = await rt.jobs.submit({ queue: "hung", tasks: [1], lane: false });
      await waitUntil(() => ran.includes("1:1"), {
        timeoutMs: 15_000,
        message: "the next job's task to run once the hung one was given up",
      });
      expect(await next.done()).toMatchObject({ status: "succeeded", done: 1 });
      // Its lease run out, the hung task is delivered again and runs.
      expect(await first.done()).toMatchObject({ status: "succeeded", done: 1 });
      expect(ran).toContain("0:2");
    } finally {
      never.open();
      await worker.stop();
    }
  }, 40_000);
});
