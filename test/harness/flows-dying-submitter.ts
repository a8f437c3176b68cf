/**
 * A submitter that dies inside the job submits of the flow it submits: each
 * node's job submit dies after `step` (nothing rolled back), and its flow
 * driver dies with it (it writes nothing after). Its runtime is stopped
 * then, as a process that died would be gone. Shared by the flows-dead-submit
 * tests, on a memory server (its buckets, read raw, are their oracle) or a
 * nats-server.
 */
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { FlowRegistry, type FlowRequest } from "../../src/api/flows.ts";
import { JobRegistry } from "../../src/api/jobs.ts";
import { jobsFace } from "../../src/api/jobs-face.ts";
import { createRuntimeCore, type RuntimeCore } from "../../src/api/runtime-core.ts";
import { SimulatedCrash, type SubmitStep } from "../../src/effects/submit-job.ts";
import type { Clock } from "../../src/kernel/clock.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, type MemoryServer } from "../../src/testing.ts";

/** An entry of one of the memory server's buckets as stored, its revision beside its value. */
export const rawEntry = (
  server: MemoryServer,
  bucket: "flows" | "records" | "leases",
  key: string,
): (Record<string, unknown> & { revision: number }) | undefined => {
  const entry = memoryServerState(server)
    [bucket].live()
    .find((e) => e.key === key);
  return entry
    ? { ...(JSON.parse(entry.value as string) as Record<string, unknown>), revision: entry.revision }
    : undefined;
};

/** The flow's nodes as stored. */
export const rawNodes = (server: MemoryServer, flowId: string) =>
  rawEntry(server, "flows", flowId)?.nodes as Record<
    string,
    { jobId: string; status: string; reason?: string }
  >;

/**
 * Submits `request` from a runtime whose every job submit dies after `step`; returns once that
 * runtime is gone. Its job actors give their leases back as they end (written run out), unless
 * `giveBack` is false: then each lease runs out by its TTL (300 ms), as a killed process's does.
 * `clock`: that runtime's (the real one by default).
 */
export const submitAndDie = async (
  server: MemoryServer,
  step: SubmitStep,
  request: FlowRequest,
  { giveBack = true, clock }: { giveBack?: boolean; clock?: Clock } = {},
): Promise<void> => {
  const core = await createRuntimeCore(
    { logger: silentLogger(), roles: ["submitter"], ...(clock ? { clock } : {}) },
    { connect: false },
  );
  const broker = createMemoryBroker({ server });
  if (!giveBack) broker.leases.giveBack = async () => undefined;
  await dieSubmitting(core, broker, step, request);
};

/**
 * `submitAndDie` on the nats-server at `url`; returns the time (`Date.now()`) its flow submit
 * returned, the submitter dead from then on. `clock`: that runtime's (the real one by default).
 */
export const submitAndDieOnNats = async (
  url: string,
  step: SubmitStep,
  request: FlowRequest,
  { clock }: { clock?: Clock } = {},
): Promise<number> => {
  const core = await createRuntimeCore({
    servers: url,
    logger: silentLogger(),
    roles: ["submitter"],
    ...(clock ? { clock } : {}),
  });
  const broker = createNatsBroker(core, { retentionMs: 7 * 24 * 3600_000, holder: "crashing" });
  return dieSubmitting(core, broker, step, request);
};

/** The dying submitter on `core` and `broker`, stopped with them; when its flow submit returned. */
const dieSubmitting = async (
  core: RuntimeCore & { stop(): Promise<void> },
  broker: Broker,
  step: SubmitStep,
  request: FlowRequest,
): Promise<number> => {
  let died = false;
  const jobs = new JobRegistry(core, broker, {
    reapIntervalMs: 3600_000,
    reapGraceMs: 10_000,
    leaseMs: 300,
    takeOver: false,
    submitHooks: {
      afterStep: (at: SubmitStep) => {
        if (at !== step) return;
        died = true;
        throw new SimulatedCrash(`process died after ${at}`);
      },
    },
  });
  const flows = new FlowRegistry(core, broker, jobsFace(jobs), (listener) => jobs.records.listen(listener));
  flows.driver.hook = () => {
    if (died) throw new Error("process died");
  };
  await flows.submit(request);
  const diedAt = Date.now();
  await flows.stop();
  await jobs.stop();
  await core.stop();
  return diedAt;
};
