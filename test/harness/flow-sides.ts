/**
 * Runtimes on one server of either broker, each with its roles and its broker
 * wrapped (a spy holding or failing a call), and raw reads of the stores
 * (the memory server's state, or a nats.js client of its own): the oracle
 * of the flow review tests, never a runtime's answer. `heldSubmit` sets up a
 * submit of A's that loses its flow's id to B's.
 */
import { randomUUID } from "node:crypto";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import type { FlowHandle } from "../../src/api/flows.ts";
import type { Role } from "../../src/api/permissions.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { startNatsServer } from "./nats-server.ts";
import { spiedBroker } from "./spied-broker.ts";
import { gate, waitUntil } from "./wait.ts";

const names = brokerNames("jetstate");

export interface FlowSide {
  runtime(name: string, roles: readonly Role[], wrap?: (broker: Broker) => Broker): Promise<Runtime>;
  /** A job's record as the server stores it. */
  storedJob(jobId: string): Promise<{ status: string; phase: string } | undefined>;
  /** A flow's record as the server stores it. */
  storedFlow(
    id: string,
  ): Promise<{ status: string; nodes: Record<string, { status: string; jobId: string }> } | undefined>;
  dispose(): Promise<void>;
}

export const memoryFlowSide = async (): Promise<FlowSide> => {
  const server = createMemoryServer();
  const runtimes: Runtime[] = [];
  const state = memoryServerState(server);
  return {
    runtime: async (name, roles, wrap = (b) => b) => {
      const rt = await createRuntime({
        name,
        roles,
        logger: silentLogger(),
        jobs: { cleanupIntervalMs: 0 },
        broker: wrap(createMemoryBroker({ server })),
      });
      runtimes.push(rt);
      return rt;
    },
    storedJob: async (jobId) => JSON.parse(state.records.get("test", jobId)?.value ?? "null") ?? undefined,
    storedFlow: async (id) => {
      const entry = state.flows.live().find((e) => e.key === id);
      return entry ? JSON.parse(entry.value as string) : undefined;
    },
    dispose: async () => {
      for (const rt of runtimes.reverse()) await rt.stop().catch(() => undefined);
      server.close();
    },
  };
};

export const natsFlowSide = async (): Promise<FlowSide> => {
  const server = await startNatsServer();
  const reader = await connect({ servers: server.url });
  const runtimes: Runtime[] = [];
  const cores: Array<{ stop(): Promise<void> }> = [];
  return {
    runtime: async (name, roles, wrap = (b) => b) => {
      const options = {
        name,
        roles,
        servers: server.url,
        logger: silentLogger(),
        jobs: { cleanupIntervalMs: 0 },
      };
      const core = await createRuntimeCore(options);
      cores.push(core);
      const inner = createNatsBroker(core, {
        retentionMs: core.options.jobs.retentionMs,
        holder: `nats.${randomUUID().slice(0, 8)}`,
      });
      const rt = await createRuntime({ ...options, broker: wrap(inner) });
      runtimes.push(rt);
      return rt;
    },
    storedJob: async (jobId) => (await (await new Kvm(reader).open(names.jobsBucket)).get(jobId))?.json(),
    storedFlow: async (id) => {
      const entry = await (await new Kvm(reader).open(names.flowsBucket)).get(id);
      return entry?.operation === "PUT" ? entry.json() : undefined;
    },
    dispose: async () => {
      for (const rt of runtimes.reverse()) await rt.stop().catch(() => undefined);
      await Promise.allSettled(cores.map((c) => c.stop()));
      await reader.close();
      await server.dispose();
    },
  };
};

export interface HeldSubmit {
  readonly a: Runtime;
  readonly b: Runtime;
  readonly w: Runtime;
  /** W's ledger: each task it ran, by its payload. */
  readonly ran: readonly string[];
  /** A's reads of the flow's record (`flows.getFlow` of the id) at its broker, so far. */
  aReads(): number;
  /** Starts A's submit of the flow (one job, `mine`, its task `"a"`): its record write is held. */
  submitA(): Promise<FlowHandle>;
  /** Resolves once A's record write is under way, held. */
  aWriting(): Promise<void>;
  /** B's submit of a flow of the same id (one job, `theirs`, its task `"b"`), then A's write let through. */
  bWins(): Promise<FlowHandle>;
  /** Lets W's held tasks end. */
  releaseTasks(): void;
  /** Lets everything held go, waits for A's submit to settle, and disposes of the side. */
  dispose(): Promise<void>;
}

/**
 * Runtimes A and B (submitter, supervisor) and W (worker of queue `q`) on
 * `side`, for A's submit of flow `id` to lose the id to B's flow (another
 * request): A's record write (`flows.createFlow`) is held until B's flow is
 * written, and each task W runs is held until released or aborted.
 */
export const heldSubmit = async (side: FlowSide, id: string): Promise<HeldSubmit> => {
  const bWrote = gate();
  let writing = false;
  let reads = 0;
  const wrapA = (inner: Broker) =>
    spiedBroker(inner, (name, _n, args, call) => {
      if (name === "flows.getFlow" && args[0] === id) reads++;
      if (name !== "flows.createFlow") return call();
      writing = true;
      return bWrote.opened.then(call);
    }).broker;
  const a = await side.runtime("a", ["submitter", "supervisor"], wrapA);
  const b = await side.runtime("b", ["submitter", "supervisor"]);
  const w = await side.runtime("w", ["worker"]);
  const ran: string[] = [];
  const release = gate();
  w.workers.start<string, string>({
    queue: "q",
    handler: async (task, { signal }) => {
      ran.push(task.payload);
      const aborted = new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
      await Promise.race([release.opened, aborted]);
      return task.payload;
    },
  });
  let submitted: Promise<unknown> = Promise.resolve();
  return {
    a,
    b,
    w,
    ran,
    aReads: () => reads,
    submitA: () => {
      const submit = a.flows.submit({ id, jobs: { mine: { queue: "q", tasks: ["a"] } } });
      submitted = submit.catch(() => undefined);
      return submit;
    },
    aWriting: () => waitUntil(() => writing, { timeoutMs: 5000, message: "A's record write under way" }),
    bWins: async () => {
      const theirs = await b.flows.submit({ id, jobs: { theirs: { queue: "q", tasks: ["b"] } } });
      bWrote.open();
      return theirs;
    },
    releaseTasks: release.open,
    dispose: async () => {
      bWrote.open();
      release.open();
      await submitted;
      await side.dispose();
    },
  };
};
