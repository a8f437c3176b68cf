/**
 * Runtimes on one server of either broker, each with its roles and its broker
 * wrapped (a spy holding or failing a call), and raw reads of the stores
 * (the memory server's state, or a nats.js client of its own): the oracle
 * of the flow review tests, never a runtime's answer.
 */
import { randomUUID } from "node:crypto";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import type { Role } from "../../src/api/permissions.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { startNatsServer } from "./nats-server.ts";

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
