import { randomUUID } from "node:crypto";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll, describe } from "vitest";
import { createMemoryBroker, createMemoryServer } from "../../src/adapters/memory/memory-broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import type { RuntimeOptions } from "../../src/api/options.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type FaultyBroker, faultyBroker } from "./faulty-broker.ts";
import { type NatsServerHandle, startNatsServer } from "./nats-server.ts";
import { memoryRawResults, type RawResult, storedCount } from "./raw-results.ts";

export { type RawResult, tally } from "./raw-results.ts";

export interface FaultyRuntime extends FaultyBroker {
  readonly rt: Runtime;
  stop(): Promise<void>;
}

/**
 * One broker "server" (a nats-server of the test's own, or a memory server)
 * and runtimes on it whose broker port is wrapped in `faultyBroker`; read
 * back raw: what the server holds, not what the runtime says it holds.
 */
export interface FaultBench {
  readonly kind: "memory" | "nats";
  /** A runtime on this server; several share it (supervision takeover). */
  runtime(options?: RuntimeOptions): Promise<FaultyRuntime>;
  /** Every result entry stored for the job, in order, duplicates included. */
  rawResults(queue: string, jobId: string): Promise<RawResult[]>;
  /** Task messages stored for the job, on its own subject or its queue's lane (not yet acked, termed or removed). */
  rawTasks(queue: string, jobId: string): Promise<number>;
  /** The job's tasks held until due, on its queue's delayed stream. */
  rawHeld(queue: string, jobId: string): Promise<number>;
  /** Stores `body` as a results message of the job, past the runtime (as a worker elsewhere would). */
  rawPublishResults(queue: string, jobId: string, body: string): Promise<void>;
  /** Who the job's supervision lease names as stored (undefined: none). */
  rawLeaseHolder(jobId: string): Promise<string | undefined>;
  /**
   * Every write of a job's record stored from now on (its value as it was then, with its
   * revision), read raw as the store hands it out: the bucket's stream on NATS.
   */
  followRecords(): Promise<RecordHistory>;
  /**
   * From now on the server refuses a dead letter of a task of 2 KB or more (the memory server
   * any message that large; NATS the dead-letter stream, any letter); undone by what it returns.
   */
  refuseLetters(): Promise<() => Promise<void>>;
  dispose(): Promise<void>;
}

/** The writes of the jobs' records stored since `followRecords`, in order. */
export interface RecordHistory {
  /** The job's record writes seen so far: revision, status, and the stored record as it was. */
  of(jobId: string): ReadonlyArray<{ readonly revision: number; readonly record: Record<string, unknown> }>;
  stop(): void;
}

const holderIn = (value: string | undefined): string | undefined =>
  value === undefined ? undefined : (JSON.parse(value) as { holder: string }).holder;

/** A record history fed with each write as the store hands it out. */
const historyOf = () => {
  const writes: Array<{ key: string; revision: number; record: Record<string, unknown> }> = [];
  return {
    add: (key: string, revision: number, value: string | undefined) => {
      if (value !== undefined) writes.push({ key, revision, record: JSON.parse(value) });
    },
    of: (jobId: string) =>
      writes.filter(({ key }) => key === jobId).map(({ revision, record }) => ({ revision, record })),
  };
};

const names = brokerNames("jetstate");
const base: RuntimeOptions = { logger: silentLogger(), jobs: { cleanupIntervalMs: 0 } };
const merge = (options: RuntimeOptions): RuntimeOptions => ({
  ...base,
  ...options,
  jobs: { ...base.jobs, ...options.jobs },
});

export const memoryBench = async (): Promise<FaultBench> => {
  const server = createMemoryServer({ prefix: "jetstate" });
  const started = new Set<FaultyRuntime>();
  return {
    kind: "memory",
    runtime: async (options = {}) => {
      const inner = createMemoryBroker({ server, holder: `memory.${randomUUID().slice(0, 8)}` });
      const faulty = faultyBroker(inner);
      const rt = await createRuntime({ ...merge(options), broker: faulty.broker });
      const handle = { ...faulty, rt, stop: () => rt.stop() };
      started.add(handle);
      return handle;
    },
    rawResults: async (queue, jobId) => memoryRawResults(server, queue, jobId),
    rawTasks: async (queue, jobId) => {
      const { tasks } = memoryServerState(server);
      return tasks.count(names.tasksSubject(queue, jobId)) + tasks.count(names.laneSubject(queue, jobId));
    },
    rawHeld: async (queue, jobId) =>
      memoryServerState(server).delayed.count(names.delayedSubject(queue, jobId)),
    rawPublishResults: async (queue, jobId, body) => {
      memoryServerState(server).results.append(names.resultsSubject(queue, jobId), body, randomUUID());
    },
    rawLeaseHolder: async (jobId) => holderIn(memoryServerState(server).leases.get("test", jobId)?.value),
    followRecords: async () => {
      const history = historyOf();
      const stop = memoryServerState(server).records.watch(({ key, revision, value }) =>
        history.add(key, revision, value),
      );
      return { of: history.of, stop };
    },
    refuseLetters: async () => {
      const state = memoryServerState(server) as unknown as { maxPayload: number };
      const was = state.maxPayload;
      state.maxPayload = 1024;
      return async () => {
        state.maxPayload = was;
      };
    },
    dispose: async () => {
      await Promise.allSettled([...started].map((r) => r.stop()));
      server.close();
    },
  };
};

/**
 * On NATS the broker needs a runtime core (its connection and operation
 * runner): the bench makes one per runtime, builds the NATS broker on it,
 * and hands the wrapped broker to `createRuntime` as a broker object.
 * Jobs, workers and leases go through that broker; the runtime's own
 * connection stays idle (a broker object is not "nats" to `createRuntime`),
 * so agents on a NATS bench runtime are not supported.
 */
export const natsBench = async (): Promise<FaultBench> => {
  const server: NatsServerHandle = await startNatsServer();
  const reader: NatsConnection = await connect({ servers: server.url });
  const jsm = await jetstreamManager(reader);
  const started = new Set<FaultyRuntime>();
  // Only a stream that does not exist counts as empty: any other failed read throws.
  const countOn = (stream: string, subject: string) => storedCount(jsm, stream, subject);
  return {
    kind: "nats",
    runtime: async (options = {}) => {
      const merged = { ...merge(options), servers: server.url };
      const core = await createRuntimeCore(merged);
      const inner = createNatsBroker(core, {
        retentionMs: core.options.jobs.retentionMs,
        holder: `nats.${randomUUID().slice(0, 8)}`,
      });
      const faulty = faultyBroker(inner);
      const rt = await createRuntime({ ...merged, broker: faulty.broker });
      let stopped: Promise<void> | undefined;
      const handle = {
        ...faulty,
        rt,
        stop: () => {
          stopped ??= rt.stop().then(() => core.stop());
          return stopped;
        },
      };
      started.add(handle);
      return handle;
    },
    rawResults: async (queue, jobId) => {
      const subject = names.resultsSubject(queue, jobId);
      const count = await countOn(names.resultsStream, subject);
      if (count === 0) return [];
      const consumer = await jetstream(reader).consumers.get(names.resultsStream, {
        filter_subjects: subject, // a single subject: nats-server 2.9 has no filter list
      });
      const entries: RawResult[] = [];
      let read = 0;
      const messages = await consumer.fetch({ max_messages: count, expires: 5000 });
      for await (const m of messages) {
        entries.push(...(JSON.parse(m.string()) as RawResult[]));
        if (++read === count) break;
      }
      if (read < count) throw new Error(`read ${read} of ${count} results messages of ${jobId}`);
      return entries;
    },
    rawTasks: async (queue, jobId) =>
      (await countOn(names.tasksStream(queue), names.tasksSubject(queue, jobId))) +
      (await countOn(names.tasksStream(queue), names.laneSubject(queue, jobId))),
    rawHeld: (queue, jobId) => countOn(names.delayedStream(queue), names.delayedSubject(queue, jobId)),
    rawPublishResults: async (queue, jobId, body) => {
      await jetstream(reader).publish(names.resultsSubject(queue, jobId), body);
    },
    rawLeaseHolder: async (jobId) => {
      const entry = await (await new Kvm(reader).open(names.leasesBucket)).get(jobId);
      return holderIn(entry?.operation === "PUT" ? entry.string() : undefined);
    },
    followRecords: async () => {
      const history = historyOf();
      const watch = await (await new Kvm(reader).open(names.jobsBucket)).watch();
      void (async () => {
        for await (const entry of watch)
          history.add(entry.key, entry.revision, entry.operation === "PUT" ? entry.string() : undefined);
      })();
      return { of: history.of, stop: () => watch.stop() };
    },
    refuseLetters: async () => {
      const info = await jsm.streams.info(names.deadStream);
      await jsm.streams.update(names.deadStream, { ...info.config, max_msg_size: 64 });
      return async () => {
        await jsm.streams.update(names.deadStream, info.config);
      };
    },
    dispose: async () => {
      await Promise.allSettled([...started].map((r) => r.stop()));
      await reader.close();
      await server.dispose();
    },
  };
};

/** What `useFaultBench` hands a describe block. */
export interface FaultBenchUse {
  /** The block's bench, once its `beforeAll` has made it. */
  readonly bench: FaultBench;
  /** A runtime on the bench, stopped after the test. */
  runtime(options?: RuntimeOptions): Promise<FaultyRuntime>;
  /** Runs `cleanup` after the test, last registered first. */
  after(cleanup: () => Promise<void>): void;
}

/**
 * A bench for one describe block: made in `beforeAll`, disposed in
 * `afterAll`; what a test starts on it (`runtime`, `after`) is stopped after
 * that test, last first.
 */
export const useFaultBench = (make: () => Promise<FaultBench>): FaultBenchUse => {
  let bench: FaultBench | undefined;
  const cleanups: Array<() => Promise<void>> = [];
  beforeAll(async () => {
    bench = await make();
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  afterAll(async () => {
    await bench?.dispose();
  });
  const use: FaultBenchUse = {
    get bench() {
      if (!bench) throw new Error("the bench is made in beforeAll: read it in a test");
      return bench;
    },
    runtime: async (options = {}) => {
      const r = await use.bench.runtime(options);
      use.after(() => r.stop());
      return r;
    },
    after: (cleanup) => {
      cleanups.push(cleanup);
    },
  };
  return use;
};

/**
 * A describe block on each broker (`title`'s `%s`: `memory`, then `nats`), its tests on a bench
 * of their own (`useFaultBench`).
 */
export const describeOnBothBenches = (title: string, body: (use: FaultBenchUse) => void): void =>
  describe.each([
    ["memory", memoryBench],
    ["nats", natsBench],
  ] as const)(title, (_kind, makeBench) => body(useFaultBench(makeBench)));
