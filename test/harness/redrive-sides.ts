/**
 * Two runtimes racing a redrive against their job's writes, on either broker:
 * each runtime's broker can be wrapped (a spy holding a write), and the job's
 * record is read as the server stores it (the memory server's state, or the
 * jobs bucket through a nats.js client of its own), not through jetstate.
 */
import { randomUUID } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import type { JobCounts } from "../../src/kernel/job-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { startNatsServer } from "./nats-server.ts";
import { storedCount } from "./raw-results.ts";

const names = brokerNames("jetstate");
const jobs = { leaseMs: 2000, cleanupIntervalMs: 0 };

export interface RedriveSide {
  /** A runtime whose broker goes through `wrap` (`takeOver: false`: it never supervises a job it did not submit). */
  runtime(name: string, wrap?: (broker: Broker) => Broker, takeOver?: boolean): Promise<Runtime>;
  /** The job's record as the server stores it. */
  stored(jobId: string): Promise<{ status: string; counts: JobCounts; redrive?: string } | undefined>;
  /** The job's tasks the server holds (its tasks stream's count on the job's subject). */
  storedTasks(queue: string, jobId: string): Promise<number>;
  dispose(): Promise<void>;
}

export const memorySide = async (): Promise<RedriveSide> => {
  const server = createMemoryServer();
  return {
    runtime: (name, wrap = (b) => b, takeOver = true) =>
      createRuntime({
        name,
        logger: silentLogger(),
        jobs: { ...jobs, takeOver },
        broker: wrap(createMemoryBroker({ server })),
      }),
    stored: async (jobId) =>
      JSON.parse(memoryServerState(server).records.get("test", jobId)?.value ?? "null"),
    storedTasks: async (queue, jobId) =>
      memoryServerState(server).tasks.count(names.tasksSubject(queue, jobId)),
    dispose: async () => server.close(),
  };
};

export const natsSide = async (): Promise<RedriveSide> => {
  const server = await startNatsServer();
  const reader = await connect({ servers: server.url });
  const jsm = await jetstreamManager(reader);
  const cores: Array<{ stop(): Promise<void> }> = [];
  return {
    runtime: async (name, wrap = (b) => b, takeOver = true) => {
      const options = { name, servers: server.url, logger: silentLogger(), jobs: { ...jobs, takeOver } };
      const core = await createRuntimeCore(options);
      cores.push(core);
      const inner = createNatsBroker(core, {
        retentionMs: core.options.jobs.retentionMs,
        holder: `nats.${randomUUID().slice(0, 8)}`,
      });
      return createRuntime({ ...options, broker: wrap(inner) });
    },
    stored: async (jobId) => (await (await new Kvm(reader).open(names.jobsBucket)).get(jobId))?.json(),
    storedTasks: (queue, jobId) =>
      storedCount(jsm, names.tasksStream(queue), names.tasksSubject(queue, jobId)),
    dispose: async () => {
      await Promise.allSettled(cores.map((c) => c.stop()));
      await reader.close();
      await server.dispose();
    },
  };
};
