/**
 * A redrive made between a job's end and its supervisor's clean-up of its
 * tasks (the consumer's delete and the purge that follow the end's write):
 * the redrive reads the job ended, publishes the dead task again and reopens
 * the record; then the supervisor's clean-up runs. It must remove only what
 * was stored before the end, never the redriven task. Runtime A supervises
 * (its first `removeTasks` of the job is held until the redrive is done);
 * runtime B redrives and runs the worker, which is stopped while the
 * clean-up is held, so the redriven task waits stored, as behind a backlog.
 * The oracles: the server's own count of the job's stored tasks after the
 * clean-up, the handler's ledger (the dead task ran again), and the job's
 * end as B reads it.
 */
import { randomUUID } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import type { JobTasksRef } from "../../src/kernel/job-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { startNatsServer } from "../harness/nats-server.ts";
import { storedCount } from "../harness/raw-results.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil } from "../harness/wait.ts";

const names = brokerNames("jetstate");
const jobs = { leaseMs: 600, cleanupIntervalMs: 0 };

interface Side {
  /** A runtime whose broker goes through `wrap`. */
  runtime(name: string, wrap?: (broker: Broker) => Broker): Promise<Runtime>;
  /** The job's tasks the server holds. */
  storedTasks(queue: string, jobId: string): Promise<number>;
  dispose(): Promise<void>;
}

const memorySide = async (): Promise<Side> => {
  const server = createMemoryServer();
  return {
    runtime: (name, wrap = (b) => b) =>
      createRuntime({ name, logger: silentLogger(), jobs, broker: wrap(createMemoryBroker({ server })) }),
    storedTasks: async (queue, jobId) =>
      memoryServerState(server).tasks.count(names.tasksSubject(queue, jobId)),
    dispose: async () => server.close(),
  };
};

const natsSide = async (): Promise<Side> => {
  const server = await startNatsServer();
  const reader = await connect({ servers: server.url });
  const jsm = await jetstreamManager(reader);
  const cores: Array<{ stop(): Promise<void> }> = [];
  return {
    runtime: async (name, wrap = (b) => b) => {
      const options = { name, servers: server.url, logger: silentLogger(), jobs };
      const core = await createRuntimeCore(options);
      cores.push(core);
      const inner = createNatsBroker(core, {
        retentionMs: core.options.jobs.retentionMs,
        holder: `nats.${randomUUID().slice(0, 8)}`,
      });
      return createRuntime({ ...options, broker: wrap(inner) });
    },
    storedTasks: (queue, jobId) =>
      storedCount(jsm, names.tasksStream(queue), names.tasksSubject(queue, jobId)),
    dispose: async () => {
      await Promise.allSettled(cores.map((c) => c.stop()));
      await reader.close();
      await server.dispose();
    },
  };
};

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a redrive made while the job's end is still being cleaned up, on %s", (_kind, makeSide) => {
  it("keeps the redriven task: it runs, and the job succeeds", { timeout: 40_000 }, async () => {
    const side = await makeSide();
    let releaseCleanup: () => void = () => undefined;
    const cleanupHeld = new Promise<void>((resolve) => {
      releaseCleanup = resolve;
    });
    let cleanedUp: Promise<unknown> | undefined;
    const holdFirstCleanup = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        if (name !== "removeTasks" || (args[0] as JobTasksRef).queue !== "race" || cleanedUp) return call();
        cleanedUp = cleanupHeld.then(call);
        return cleanedUp;
      }).broker;
    const a = await side.runtime("a", holdFirstCleanup);
    const b = await side.runtime("b");
    let down = true;
    const ran: number[] = [];
    const work = () =>
      b.workers.start<number, number>({
        queue: "race",
        concurrency: 2,
        handler: (task) => {
          ran.push(task.index);
          if (task.index === 1 && down) throw new Error("upstream down");
          return task.payload * 2;
        },
      });
    let worker = work();
    try {
      const job = await a.jobs.submit<number, number>({
        queue: "race",
        tasks: [1, 2],
        maxDeliver: 1,
        backoff: [0],
      });
      await waitUntil(() => cleanedUp !== undefined, {
        timeoutMs: 15_000,
        message: "A's end written, its clean-up held",
      });
      expect(await (await b.jobs.get(job.id))?.done()).toMatchObject({ status: "failed", dead: 1 });
      await worker.stop();
      down = false;
      const again = await b.jobs.redrive(job.id);
      releaseCleanup();
      await cleanedUp;
      expect(await side.storedTasks("race", job.id)).toBe(1);
      worker = work();
      const end = await Promise.race([
        again.done(),
        new Promise((resolve) => setTimeout(() => resolve("no end in 15 s"), 15_000)),
      ]);
      expect(end).toMatchObject({ status: "succeeded", done: 2, dead: 0 });
      expect(ran.filter((i) => i === 1)).toHaveLength(2);
    } finally {
      releaseCleanup();
      await worker.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
