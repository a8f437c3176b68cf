/**
 * A task never runs twice because the tasks buffered behind it waited too
 * long: a queue capped at one handler whose handlers outlast the job's ack
 * wait, and a queue paused longer than the ack wait. Each job pull loop
 * buffers several deliveries; while the first waits (a permit, the pause)
 * the others' leases run out and the server redelivers them. Oracle: the
 * handlers' own ledger of runs per index (and the job's counts).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay } from "../harness/wait.ts";

describe("tasks waiting at the gate (NATS)", () => {
  let server: NatsServerHandle;
  let admin: Runtime;
  let worker: Runtime;
  beforeAll(async () => {
    server = await startNatsServer();
    admin = await createRuntime({ servers: server.url, name: "admin", logger: silentLogger() });
    worker = await createRuntime({
      servers: server.url,
      name: "worker",
      roles: ["worker"],
      logger: silentLogger(),
    });
  });
  afterAll(async () => {
    await worker?.stop();
    await admin?.stop();
    await server?.dispose();
  });

  const ledger = () => {
    const runs = new Map<number, number>();
    return {
      runs,
      record: (index: number) => runs.set(index, (runs.get(index) ?? 0) + 1),
      twice: () => [...runs].filter(([, n]) => n > 1).map(([i]) => i),
    };
  };

  it("maxConcurrency 1, handlers longer than the ack wait: each task runs once", async () => {
    await admin.queues.configure("capped", { maxConcurrency: 1 });
    const runs = ledger();
    const w = worker.workers.start({
      queue: "capped",
      concurrency: 4,
      handler: async (task) => {
        runs.record(task.index);
        await delay(1500); // the point: a handler longer than the ack wait
        return task.index;
      },
    });
    const job = await admin.jobs.submit({
      queue: "capped",
      tasks: [0, 1, 2, 3, 4, 5],
      ackWaitMs: 1000,
      maxDeliver: 50,
    });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 6 });
    await delay(1000);
    await w.stop();
    expect([...runs.runs.keys()].sort()).toEqual([0, 1, 2, 3, 4, 5]);
    expect(runs.twice()).toEqual([]);
  }, 60_000);

  it("paused longer than the ack wait: each task runs once after resume", async () => {
    await admin.queues.pause("paused");
    const runs = ledger();
    const w = worker.workers.start({
      queue: "paused",
      concurrency: 4,
      handler: async (task) => {
        runs.record(task.index);
        return task.index;
      },
    });
    const job = await admin.jobs.submit({
      queue: "paused",
      tasks: [0, 1, 2, 3, 4, 5, 6, 7],
      ackWaitMs: 1000,
      maxDeliver: 50,
    });
    await delay(3500); // the point: a pause longer than the ack wait (1 s)
    expect(runs.runs.size).toBe(0);
    await admin.queues.resume("paused");
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 8 });
    await delay(1500);
    await w.stop();
    expect(runs.twice()).toEqual([]);
  }, 60_000);
});
