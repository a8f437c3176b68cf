/**
 * The delayed statechart's generated paths (delayed.paths.ts), replayed
 * through the mover (`effects/move-held.ts`) on real brokers, memory and
 * NATS: each delivery of a path is one call of the mover, with the job's
 * record written to the broker as the path's `record.read` says and the
 * publish failing where the path says `move.failed`. Oracles: the answer the
 * rule gives (`expectedOf`, written apart from the machine) and the task
 * messages the broker stores on the job's subject, read raw: exactly one
 * after a move, none otherwise.
 */
import { randomUUID } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { StatePath } from "@xstate/graph";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { HeldTask } from "../../src/adapters/delayed-tasks.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/adapters/memory/memory-broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { moveHeld } from "../../src/effects/move-held.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { encodeTask } from "../../src/kernel/wire.ts";
import type { DelayedEvent } from "../../src/machines/delayed.machine.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import {
  deliveriesOf,
  describePath,
  dueAt,
  expectedOf,
  paths,
  type Snapshot,
  submitId,
} from "./delayed.paths.ts";

interface Target {
  readonly broker: Broker;
  /** Task messages stored on the job's subject, read without jetstate. */
  stored(jobId: string): Promise<number>;
  stop(): Promise<void>;
}

const memoryTarget = async (): Promise<Target> => {
  const server = createMemoryServer();
  const broker = createMemoryBroker({ server });
  return {
    broker,
    stored: async (jobId) => memoryServerState(server).tasks.count(`jetstate.tasks.model.${jobId}`),
    stop: () => broker.close(),
  };
};

let nats: NatsServerHandle;
let raw: NatsConnection;
beforeAll(async () => {
  nats = await startNatsServer();
  raw = await connect({ servers: nats.url });
});
afterAll(async () => {
  await raw?.close();
  await nats?.dispose();
});

const natsTarget = async (): Promise<Target> => {
  const core = await createRuntimeCore({ servers: nats.url, logger: silentLogger() });
  const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "model" });
  return {
    broker,
    stored: async (jobId) => {
      const jsm = await jetstreamManager(raw);
      const subject = `jetstate.tasks.model.${jobId}`;
      const info = await jsm.streams
        .info("jetstate_tasks_model", { subjects_filter: subject })
        .catch(() => undefined);
      return info?.state.subjects?.[subject] ?? 0;
    },
    stop: async () => {
      await broker.close();
      await core.stop();
    },
  };
};

/** A delivery the path takes to its answer (not one that ends in `due` or `moving`). */
const isComplete = (delivery: readonly DelayedEvent[]): boolean => {
  const [delivered, read, move] = delivery;
  if (delivered?.type !== "held.delivered") return false;
  if (delivered.now < dueAt) return true;
  if (read?.type !== "record.read") return false;
  const record = read.record;
  const publishes =
    record !== undefined &&
    record.submitId === submitId &&
    record.phase === "committed" &&
    record.status === "running";
  return !publishes || move !== undefined;
};

/** The path's record, for this path's own job. */
const asJob = (record: JobRecord | undefined, jobId: string): JobRecord | undefined =>
  record && { ...record, id: jobId };

const writeRecord = async (broker: Broker, record: JobRecord | undefined, jobId: string) => {
  const found = await broker.getRecord(jobId);
  if (record === undefined) {
    if (found) await broker.deleteRecord(jobId, found.revision);
    return;
  }
  if (found) await broker.updateRecord(record, found.revision);
  else await broker.createRecord(record);
};

describe.each([
  { name: "memory", make: memoryTarget },
  { name: "nats", make: natsTarget },
])("the mover along the delayed paths, on $name", ({ make }) => {
  let target: Target;
  beforeAll(async () => {
    target = await make();
  });
  afterAll(async () => {
    await target?.stop();
  });

  it.each(paths.map((p) => [describePath(p), p] as const))(
    "%s",
    async (_, path: StatePath<Snapshot, DelayedEvent>) => {
      const jobId = `jm${randomUUID().replaceAll("-", "").slice(0, 12)}`;
      const body = encodeTask(0, { path: describePath(path) });
      const task: HeldTask = { queue: "model", jobId, dueAt, msgId: `${jobId}.${submitId}.d0`, body };
      let moved = false;
      for (const delivery of deliveriesOf(path)) {
        if (!isComplete(delivery)) continue;
        const [delivered, read, move] = delivery;
        if (delivered?.type !== "held.delivered") continue;
        if (read?.type === "record.read") await writeRecord(target.broker, asJob(read.record, jobId), jobId);
        const failing = move?.type === "move.failed";
        const answer = await moveHeld(
          {
            getRecord: (id) => target.broker.getRecord(id),
            releaseHeld: failing
              ? () => Promise.reject(new Error("injected: publish refused"))
              : (t) => target.broker.releaseHeld(t),
          },
          task,
          () => delivered.now,
          silentLogger(),
        );
        const expected = expectedOf(delivery);
        if (expected.answer === "done") {
          expect(answer).toEqual({ kind: "done" });
          moved ||= expected.moved;
        } else expect(answer).toEqual({ kind: "later", ms: expected.ms });
      }
      expect(await target.stored(jobId)).toBe(moved ? 1 : 0);
      // Moved again (a mover that died between its publish and its ack): stored once.
      if (moved) {
        await target.broker.releaseHeld(task);
        expect(await target.stored(jobId)).toBe(1);
      }
    },
  );
});
