/**
 * Two runtimes racing a redrive against their job's writes, on either broker:
 * each runtime's broker can be wrapped (a spy holding a write), and the job's
 * record is read as the server stores it (the memory server's state, or the
 * jobs bucket through a nats.js client of its own), not through jetstate.
 */
import { randomUUID } from "node:crypto";
import { JetStreamApiCodes, JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { expect } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import type { Worker } from "../../src/api/worker-options.ts";
import type { SubmitRequest } from "../../src/effects/plan-submit.ts";
import type { JobCounts } from "../../src/kernel/job-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { startNatsServer } from "./nats-server.ts";
import { memoryRawResults, natsRawResults, type RawResult, storedCount } from "./raw-results.ts";
import { spiedBroker } from "./spied-broker.ts";
import { gate } from "./wait.ts";

const names = brokerNames("jetstate");
/** The runtimes' job settings a side may change: how long a supervisor's lease lasts. */
export interface SideOptions {
  /** Default 2000. */
  leaseMs?: number;
}

export interface RedriveSide {
  /** A runtime whose broker goes through `wrap` (`takeOver: false`: it never supervises a job it did not submit). */
  runtime(name: string, wrap?: (broker: Broker) => Broker, takeOver?: boolean): Promise<Runtime>;
  /** The job's record as the server stores it. */
  stored(
    jobId: string,
  ): Promise<
    { status: string; counts: JobCounts; redrive?: string; reason?: string; finishedAt?: number } | undefined
  >;
  /** The job's tasks the server holds (its tasks stream's count on the job's subject). */
  storedTasks(queue: string, jobId: string): Promise<number>;
  /** Whether the server holds the job's own consumer on its queue's tasks stream. */
  storedConsumer(queue: string, jobId: string): Promise<boolean>;
  /** Every entry of the job's results messages as the server stores them, in order. */
  storedResults(queue: string, jobId: string): Promise<RawResult[]>;
  /** The job's supervision lease as the server stores it (undefined: no key, or a marker). */
  storedLease(jobId: string): Promise<{ holder: string; until: number } | undefined>;
  /** Writes the job's lease as the server would store a runtime's take, behind every runtime's back. */
  writeLease(jobId: string, lease: { holder: string; until: number }): Promise<void>;
  dispose(): Promise<void>;
}

export const memorySide = async ({ leaseMs = 2000 }: SideOptions = {}): Promise<RedriveSide> => {
  const jobs = { leaseMs, cleanupIntervalMs: 0 };
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
    storedConsumer: async (_queue, jobId) => memoryServerState(server).tasks.consumer(jobId) !== undefined,
    storedResults: async (queue, jobId) => memoryRawResults(server, queue, jobId),
    storedLease: async (jobId) => {
      const value = memoryServerState(server).leases.get("test", jobId)?.value;
      return value === undefined ? undefined : JSON.parse(value);
    },
    writeLease: async (jobId, lease) => {
      memoryServerState(server).leases.put("test", jobId, JSON.stringify({ v: 1, ...lease }));
    },
    dispose: async () => server.close(),
  };
};

export const natsSide = async ({ leaseMs = 2000 }: SideOptions = {}): Promise<RedriveSide> => {
  const jobs = { leaseMs, cleanupIntervalMs: 0 };
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
    storedConsumer: (queue, jobId) =>
      jsm.consumers.info(names.tasksStream(queue), jobId).then(
        () => true,
        (error: unknown) => {
          if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.ConsumerNotFound)
            return false;
          throw error;
        },
      ),
    storedResults: (queue, jobId) => natsRawResults(reader, queue, jobId),
    storedLease: async (jobId) => {
      const entry = await (await new Kvm(reader).open(names.leasesBucket)).get(jobId);
      return entry?.operation === "PUT" ? entry.json() : undefined;
    },
    writeLease: async (jobId, lease) => {
      await (await new Kvm(reader).open(names.leasesBucket)).put(jobId, JSON.stringify({ v: 1, ...lease }));
    },
    dispose: async () => {
      await Promise.allSettled(cores.map((c) => c.stop()));
      await reader.close();
      await server.dispose();
    },
  };
};

export interface FlakyWorker {
  /** Starts a worker on the queue; again after a stop, with the same ledger and upstream. */
  start(): Worker;
  /** The handler's ledger: each run of a task, in order, its index and whether it threw. */
  readonly ran: Array<[number, "ok" | "threw"]>;
  /** The upstream is back: the dying task answers from now on. */
  mend(): void;
}

/**
 * A worker whose upstream is down for one task: the task at index `dying`
 * (or every task: `"every"`) throws ("upstream down") until `mend()`, every other run answers its
 * payload doubled, once `before` (a gate the test opens, say) has resolved
 * for its index. Submitted with `submitDying` (one delivery, no backoff),
 * that task dies at once, its dead letter left to redrive. Nothing runs
 * before `start()`, which may be called again after a stop (a worker back
 * after the redrive, its task waiting stored as behind a backlog).
 */
export const flakyWorker = (
  runtime: Runtime,
  queue: string,
  {
    dying = 0,
    concurrency,
    before,
  }: { dying?: number | "every"; concurrency?: number; before?: (index: number) => Promise<void> } = {},
): FlakyWorker => {
  let down = true;
  const ran: FlakyWorker["ran"] = [];
  return {
    start: () =>
      runtime.workers.start<number, number>({
        queue,
        concurrency,
        handler: async (task) => {
          if ((dying === "every" || task.index === dying) && down) {
            ran.push([task.index, "threw"]);
            throw new Error("upstream down");
          }
          if (before) await before(task.index);
          ran.push([task.index, "ok"]);
          return task.payload * 2;
        },
      }),
    ran,
    mend: () => {
      down = false;
    },
  };
};

/** Submits `[1, 2]` to `queue` for a `flakyWorker`: one delivery, no backoff (`extra` adds or overrides). */
export const submitDying = (
  runtime: Runtime,
  queue: string,
  extra: Partial<SubmitRequest<number, number>> = {},
) => runtime.jobs.submit<number, number>({ queue, tasks: [1, 2], maxDeliver: 1, backoff: [0], ...extra });

/**
 * A worker on `queue` whose upstream is down until `mend()` (each answer after it held until
 * `answer` opens), and a job of three tasks that all died (one delivery each, no backoff): where
 * the tests of overlapping redrives start.
 */
export const threeDead = async (runtime: Runtime, queue: string) => {
  let down = true;
  const answer = gate();
  const worker = runtime.workers.start<number, number>({
    queue,
    concurrency: 4,
    handler: async (task) => {
      if (down) throw new Error("upstream down");
      await answer.opened;
      return task.payload * 2;
    },
  });
  const job = await submitDying(runtime, queue, { tasks: [1, 2, 3] });
  expect(await job.done()).toMatchObject({ status: "failed", dead: 3 });
  return {
    job,
    worker,
    answer,
    mend: () => {
      down = false;
    },
  };
};

/**
 * A job of `submitDying` whose dying task was redriven, as its oracles say it ended: stored
 * `succeeded` with both tasks done and none dead, no dead letter left, and the dying task run
 * twice, once throwing and once answering (the handler's ledger).
 */
export const expectRedriveSucceeded = async (
  side: RedriveSide,
  jobs: Runtime["jobs"],
  jobId: string,
  flaky: FlakyWorker,
): Promise<void> => {
  expect(await side.stored(jobId)).toMatchObject({
    status: "succeeded",
    counts: { done: 2, failed: 0, dead: 0 },
  });
  expect(await jobs.deadLetters(jobId)).toEqual([]);
  expect(flaky.ran.filter(([i]) => i === 0)).toEqual([
    [0, "threw"],
    [0, "ok"],
  ]);
};

/**
 * A wrap for a redriving runtime's broker that holds its redrive's markers (the results message
 * named `redrive.<job>.<id>`) until `held` opens, and says when one reached it (`reached`);
 * with `alsoSecondListing`, a second listing of the letters by that broker is held the same way
 * (`listingHeld`, `listingReached`).
 */
export const holdMarkers = (alsoSecondListing = false) => {
  const held = gate();
  const reached = gate();
  const listingHeld = gate();
  const listingReached = gate();
  const wrap = (inner: Broker) =>
    spiedBroker(inner, (name, n, args, call) => {
      if (name === "publishResults" && String(args[3]).startsWith("redrive.")) {
        reached.open();
        return held.opened.then(call);
      }
      if (alsoSecondListing && name === "listDeadLetters" && n === 2) {
        listingReached.open();
        return listingHeld.opened.then(call);
      }
      return call();
    }).broker;
  return { held, reached, listingHeld, listingReached, wrap };
};
