import { randomUUID } from "node:crypto";
import type { Broker } from "../adapters/broker.ts";
import type { CleanupOptions, CleanupReport } from "../adapters/broker-admin.ts";
import { memoryAgentStore } from "../adapters/memory/memory-agent-store.ts";
import { createMemoryBroker, memoryAgentsOf, memorySchedulesOf } from "../adapters/memory/memory-broker.ts";
import { MemoryKv } from "../adapters/memory/memory-kv.ts";
import { memoryScheduleStore } from "../adapters/memory/memory-schedule-store.ts";
import { describeServer } from "../adapters/nats/describe-server.ts";
import { supervisedAgentStore } from "../adapters/nats/kv-agent-store.ts";
import { createNatsBroker, type NatsBroker } from "../adapters/nats/nats-broker.ts";
import { type ConnectionHandle, connectionHandle } from "../adapters/nats/supervised-connection.ts";
import { InvalidArgument, RuntimeStopped } from "../kernel/errors.ts";
import { childLogger, type Logger, silentLogger } from "../kernel/logger.ts";
import type { WorkerInfo } from "../kernel/presence.ts";
import { check, checkCleanupOptions, rejectUnknownKeys, SubjectToken } from "../kernel/validation.ts";
import { type Agents, createAgentRegistry } from "./agents.ts";
import { cleanupOnce } from "./cleanup.ts";
import { diagnose } from "./diagnose.ts";
import type { Diagnosis, MeantFor } from "./diagnosis.ts";
import { FlowRegistry, type Flows, flowsFace } from "./flows.ts";
import { JobRegistry } from "./jobs.ts";
import { type Jobs, jobsFace } from "./jobs-face.ts";
import { queueKeepers } from "./kept-queue-record.ts";
import type { RuntimeOptions } from "./options.ts";
import { type Role, requireRole, rolesOf } from "./permissions.ts";
import { type Queues, queuesFace } from "./queues.ts";
import { createRuntimeCore, type RuntimeCore } from "./runtime-core.ts";
import { createSchedules, type Schedules } from "./schedules.ts";
import { listWorkers } from "./worker-presence.ts";
import { startWorker, type Worker, type WorkerOptions } from "./workers.ts";

export interface Runtime {
  readonly name: string;
  readonly logger: Logger;
  /** The one supervised NATS connection: state, subscribe, reset. */
  readonly connection: ConnectionHandle;
  /** Submit, find and cancel jobs. */
  readonly jobs: Jobs;
  /** Jobs of jobs: a parent and its children, or a DAG, submitted atomically. */
  readonly flows: Flows;
  /** `nats` (JetStream) or `memory` (in-process, nothing persisted). */
  readonly broker: "nats" | "memory";
  /** Agents whose upstream target switches on failure, one lock per agent (KV compare-and-set across processes). */
  readonly agents: Agents;
  /** Recurring jobs: each tick of a schedule submits its job once, across every runtime. */
  readonly schedules: Schedules;
  readonly admin: {
    /** Removes what finished jobs, settled flows and crashed runs left; `dryRun` only reports it. */
    cleanup(options?: CleanupOptions): Promise<CleanupReport>;
    /**
     * Creates the shared streams and buckets, and those of `queues`, unless
     * they exist: run once by an admin so that runtimes without permission
     * to create them (workers, supervisors) find them. Idempotent. Each call
     * looks at the server, not at what the runtime remembers it set up: run
     * again after the server came back with an empty store, it makes them again.
     */
    provision(queues?: readonly string[]): Promise<void>;
    /**
     * Reads the server and reports what is wrong: JetStream off, a stream or
     * bucket of jetstate's missing or with another replica count, an identity
     * allowed no role's calls, this host's clock off the server's; for an
     * identity that may list streams (an admin), also what each queue relies
     * on: its `dead-letters` and `lane` consumers, its delayed stream and
     * `due` consumer, its permit pools and their consumers, the answers
     * bucket's TTL. Needs no role (it checks what each
     * role may do). It writes nothing of jetstate's; measuring the clock, and
     * reading the queues' settings, each create one ephemeral consumer and
     * delete it. A few calls per queue, none per job. NATS only.
     * @example
     * for (const p of (await rt.admin.diagnose()).problems) log.warn({ fix: p.fix }, p.what);
     * Told what the identity is meant for (`{ roles, queues }`), it judges each
     * of those roles on each of those queues: a grant missing for one of them
     * is a problem, which its grants alone cannot show.
     * @example
     * await rt.admin.diagnose({ roles: ["worker"], queues: ["detect", "embed"] });
     */
    diagnose(meantFor?: MeantFor): Promise<Diagnosis>;
  };
  /** Pause, resume and limit queues across every worker of every process. */
  readonly queues: Queues;
  readonly workers: {
    start<Payload, Result>(options: WorkerOptions<Payload, Result>): Worker;
    /**
     * Every live worker of every process (or of `queue`'s): what it runs, how
     * busy it is, what it answered. A worker leaves the list when it stops,
     * or within `presenceMs` after its process died.
     */
    list(query?: WorkerListQuery): Promise<WorkerInfo[]>;
  };
  /** Drain: finish what is in flight, flush, close the one connection. Bounded even when NATS is down. */
  stop(): Promise<void>;
}

/**
 * NATS when a server is given, else memory — except in production, where
 * landing in memory by accident would lose every job with the process.
 */
const defaultBroker = (options: RuntimeOptions): "nats" | "memory" => {
  if (options.servers || process.env.NATS_URL) return "nats";
  if (process.env.NODE_ENV === "production") {
    throw new InvalidArgument({
      field: "broker",
      message:
        "broker: NODE_ENV=production and no NATS given: set `servers` (or the NATS_URL variable) to run on NATS, " +
        'or `broker: "memory"` to run in memory on purpose (one process, nothing persisted)',
    });
  }
  return "memory";
};

/**
 * Creates a runtime: validates the options (throws `InvalidArgument` before
 * connecting), starts the connection actor and returns at once; operations
 * wait for `connected` within their deadline.
 */
export const createRuntime = async (options: RuntimeOptions = {}): Promise<Runtime> => {
  // A memory runtime connects to no server: servers given with it would be ignored, unsaid.
  if (options.broker === "memory" && options.servers !== undefined)
    throw new InvalidArgument({
      field: "servers",
      message:
        'servers: given with broker: "memory", which connects to no server: drop `servers` to run in memory, ' +
        'or `broker: "memory"` to run on NATS',
    });
  const brokerOption = options.broker ?? defaultBroker(options);
  const core = await createRuntimeCore(options, { connect: brokerOption === "nats" });
  const jobOptions = core.options.jobs;
  const holder = `${core.options.name}.${randomUUID().slice(0, 8)}`;
  const nats: NatsBroker | undefined =
    brokerOption === "nats"
      ? createNatsBroker(core, {
          retentionMs: jobOptions.retentionMs,
          holder,
          memoryConsumers: jobOptions.memoryConsumers,
        })
      : undefined;
  const broker: Broker =
    typeof brokerOption === "object"
      ? brokerOption
      : (nats ?? createMemoryBroker({ holder, prefix: core.options.prefix, clock: core.clock }));
  childLogger(core.logger, { actor: "runtime" }).info(
    // Servers without their credentials, and only the auth method's name: no secret in a log line.
    {
      broker: broker.kind,
      ...(broker.kind === "nats"
        ? { servers: core.options.servers, ...core.options.security.describe() }
        : {}),
    },
    broker.kind === "nats"
      ? "jetstate on NATS"
      : "jetstate in memory (no NATS): one process, nothing persisted",
  );
  const jobs = new JobRegistry(core, broker, jobOptions);
  const flows = new FlowRegistry(core, broker, jobsFace(jobs), (listener) => jobs.records.listen(listener));
  const agents = createAgentRegistry({
    logger: core.logger,
    store:
      broker.kind === "nats"
        ? // One set of setups with the broker: a bucket found missing has everything set up again.
          supervisedAgentStore(core, nats?.jetstream)
        : (memoryAgentsOf(broker) ?? memoryAgentStore()),
  });
  const schedules = createSchedules(
    core,
    broker,
    nats?.schedules ??
      memorySchedulesOf(broker) ??
      // A broker of the caller's own (a test's wrapper): schedules of this runtime only.
      memoryScheduleStore(new MemoryKv((key) => `schedule ${key}`), () => undefined),
    jobs,
  );
  // A log line about the server, once: in the loop group so that stop() waits for it too.
  if (nats) core.loops.run("describe-server", () => describeServer(core, nats.jetstream.replicas.wanted));
  const workers = new Set<Worker>();
  let stopped: Promise<void> | undefined;
  const runtime: Runtime = {
    name: core.options.name,
    logger: core.logger,
    connection: connectionHandle(core.connection),
    jobs: jobsFace(jobs),
    flows: flowsFace(flows),
    broker: broker.kind,
    agents: {
      register: agents.register,
      reportFailure: agents.reportFailure,
      get: agents.get,
      subscribe: agents.subscribe,
      list: agents.list,
    },
    schedules,
    admin: {
      cleanup: async (cleanupOptions = {}) => {
        requireRole(core.options.roles, "admin", "rt.admin.cleanup()");
        checkCleanupOptions(cleanupOptions);
        return cleanupOnce(
          broker,
          { retentionMs: jobOptions.retentionMs, ...cleanupOptions },
          core.clock.now(),
        );
      },
      provision: async (queues = []) => {
        requireRole(core.options.roles, "admin", "rt.admin.provision()");
        const names = checkQueues(queues);
        await broker.provision(names);
      },
      diagnose: async (meantFor = {}) => {
        const meant = checkMeantFor(meantFor);
        if (!nats)
          throw new InvalidArgument({
            field: "broker",
            message: "rt.admin.diagnose(): reads a NATS server; this runtime runs in memory",
          });
        return diagnose(core, Math.min(2000, core.options.connection.operationTimeoutMs), meant);
      },
    },
    queues: queuesFace(
      broker.queueControls,
      core.options.roles,
      () => core.clock.now(),
      queueKeepers(broker.queueControls, core.loops, childLogger(core.logger, { actor: "runtime" })),
    ),
    workers: {
      start: (workerOptions) => {
        if (stopped) throw new RuntimeStopped({ message: "runtime stopped" });
        requireRole(core.options.roles, "worker", "rt.workers.start()");
        const worker = startWorker(core, broker, agents, workerOptions, jobs.records);
        workers.add(worker);
        return worker;
      },
      list: async (query = {}) => {
        const { queue } = checkWorkerQuery(query);
        return listWorkers(broker.presence, core.clock.now(), queue);
      },
    },
    stop: () => {
      stopped ??= (async () => {
        // Workers first: they finish or release in-flight tasks and flush results.
        await Promise.allSettled([...workers].map((w) => w.stop()));
        // After the workers: their last failures may still be reporting to the locks.
        await agents.stop();
        await flows.stop();
        await jobs.stop();
        await core.stop();
        await broker.close();
      })();
      return stopped;
    },
  };
  runtimeParts.set(runtime, { core, broker, jobs, flows });
  if (jobOptions.cleanupIntervalMs > 0 && core.options.roles.has("admin"))
    core.loops.every("cleanup", jobOptions.cleanupIntervalMs, cleanupPass(core, runtime), "later");
  return runtime;
};

/** What `rt.workers.list()` takes. */
export interface WorkerListQuery {
  /** Only the workers of this queue. */
  readonly queue?: string;
}

const checkWorkerQuery = (query: unknown): WorkerListQuery => {
  if (typeof query !== "object" || query === null)
    throw new InvalidArgument({ field: "query", message: "query: must be an object" });
  rejectUnknownKeys(query, ["queue"], "");
  const { queue } = query as WorkerListQuery;
  return queue === undefined ? {} : { queue: check(SubjectToken, queue, "queue") };
};

const checkQueues = (queues: unknown): string[] => {
  if (!Array.isArray(queues))
    throw new InvalidArgument({ field: "queues", message: "queues: must be a list of queue names" });
  return queues.map((queue, i) => check(SubjectToken, queue, `queues[${i}]`));
};

const checkMeantFor = (meant: unknown): { roles?: readonly Role[]; queues?: readonly string[] } => {
  if (typeof meant !== "object" || meant === null)
    throw new InvalidArgument({ field: "meantFor", message: "meantFor: must be { roles?, queues? }" });
  rejectUnknownKeys(meant, ["roles", "queues"], "meantFor");
  const { roles, queues } = meant as MeantFor;
  return {
    ...(roles === undefined ? {} : { roles: rolesOf(roles, "meantFor.roles") }),
    ...(queues === undefined ? {} : { queues: checkQueues(queues) }),
  };
};

/** Every admin runtime cleans up now and then; the operations are idempotent, so several may. */
const cleanupPass = (core: RuntimeCore, runtime: Runtime) => {
  const log = childLogger(core.logger, { actor: "reaper" });
  return async () => {
    const report = await runtime.admin.cleanup();
    const removed = Object.values(report).filter((v) => Array.isArray(v) && v.length > 0);
    if (removed.length > 0) log.info({ ...report }, "cleaned up finished and abandoned jobs");
  };
};

/** What `createHttpApi(rt)` and other add-ons need of a runtime beyond its public face. */
export interface RuntimeParts {
  readonly core: RuntimeCore;
  readonly broker: Broker;
  readonly jobs: JobRegistry;
  readonly flows: FlowRegistry;
}

const runtimeParts = new WeakMap<Runtime, RuntimeParts>();

/** The parts of a runtime made by `createRuntime`; throws for anything else. */
export const partsOf = (rt: Runtime): RuntimeParts => {
  const parts = runtimeParts.get(rt);
  if (!parts)
    throw new InvalidArgument({ message: "rt: must be a runtime made by createRuntime()", field: "rt" });
  return parts;
};

/**
 * A runtime on the memory broker for tests (`jetstate-jobs/testing`): no NATS,
 * a silent logger unless given one, and the clock you pass (a `ManualClock`
 * moves leases, stalls and nak delays only when you advance it).
 */
export const createTestRuntime = (options: RuntimeOptions = {}): Promise<Runtime> =>
  createRuntime({
    logger: silentLogger(),
    ...options,
    jobs: { cleanupIntervalMs: 0, ...options.jobs },
    broker:
      options.broker === undefined || options.broker === "memory"
        ? createMemoryBroker({
            prefix: options.prefix ?? "jetstate",
            ...(options.clock ? { clock: options.clock } : {}),
          })
        : options.broker,
  });
