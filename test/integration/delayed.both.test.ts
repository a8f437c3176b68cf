/**
 * Delayed tasks and jobs (issue #19, item 1) on both brokers: memory
 * (runtimes sharing one memory server) and NATS (a private nats-server).
 * The oracles are the handlers' ledger (when each task was handled, and how
 * often) and the held tasks as the broker stores them, read raw: the
 * memory server's delayed stream, or the NATS delayed stream through the
 * test's own nats.js client.
 */
import { randomUUID } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMemoryBroker, createMemoryServer } from "../../src/adapters/memory/memory-broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import type { RuntimeOptions } from "../../src/api/options.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { jobIdFor } from "../../src/effects/plan-submit.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type Faults, faultyBroker } from "../harness/faulty-broker.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

interface TestRuntime {
  readonly rt: Runtime;
  readonly faults: Faults;
}

interface Backend {
  runtime(extra?: RuntimeOptions): Promise<TestRuntime>;
  /** Held tasks of the job as the broker stores them, read without jetstate. */
  heldStored(queue: string, jobId: string): Promise<number>;
  /** Task messages stored on the job's own subject (moved there, not yet acked), read without jetstate. */
  tasksStored(queue: string, jobId: string): Promise<number>;
  stop(): Promise<void>;
}

const options: RuntimeOptions = { logger: silentLogger(), jobs: { cleanupIntervalMs: 0 } };

const memoryBackend = (): Backend => {
  const server = createMemoryServer();
  const stops: (() => Promise<void>)[] = [];
  return {
    async runtime(extra = {}) {
      const faulty = faultyBroker(createMemoryBroker({ server }));
      const rt = await createRuntime({ ...options, ...extra, broker: faulty.broker });
      stops.push(() => rt.stop());
      return { rt, faults: faulty.faults };
    },
    async heldStored(queue, jobId) {
      return memoryServerState(server).delayed.count(`jetstate.delayed.${queue}.${jobId}`);
    },
    async tasksStored(queue, jobId) {
      return memoryServerState(server).tasks.count(`jetstate.tasks.${queue}.${jobId}`);
    },
    async stop() {
      for (const stop of stops.splice(0)) await stop();
    },
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

/** On NATS a faulty broker needs a core of its own (test/harness/fault-runtimes.ts). */
const natsBackend = (): Backend => {
  const stops: (() => Promise<void>)[] = [];
  return {
    async runtime(extra = {}) {
      const merged = { ...options, ...extra, servers: nats.url };
      const core = await createRuntimeCore(merged);
      const inner = createNatsBroker(core, {
        retentionMs: core.options.jobs.retentionMs,
        holder: `nats.${randomUUID().slice(0, 8)}`,
      });
      const faulty = faultyBroker(inner);
      const rt = await createRuntime({ ...merged, broker: faulty.broker });
      stops.push(() => rt.stop().then(() => core.stop()));
      return { rt, faults: faulty.faults };
    },
    async heldStored(queue, jobId) {
      const jsm = await jetstreamManager(raw);
      const subject = `jetstate.delayed.${queue}.${jobId}`;
      const info = await jsm.streams.info(`jetstate_delayed_${queue}`, { subjects_filter: subject });
      return info.state.subjects?.[subject] ?? 0;
    },
    async tasksStored(queue, jobId) {
      const jsm = await jetstreamManager(raw);
      const subject = `jetstate.tasks.${queue}.${jobId}`;
      const info = await jsm.streams.info(`jetstate_tasks_${queue}`, { subjects_filter: subject });
      return info.state.subjects?.[subject] ?? 0;
    },
    async stop() {
      for (const stop of stops.splice(0)) await stop();
    },
  };
};

/** The job id an idempotency key names (effects/plan-submit.ts). */
const jobIdOf = (queue: string, key: string) => jobIdFor(queue, key);

/** One handling of a task: which, when, and the time it was due. */
interface Handled {
  readonly job: string;
  readonly index: number;
  readonly at: number;
}

describe.each([
  { name: "memory", make: memoryBackend },
  { name: "nats", make: natsBackend },
])("delayed tasks on $name", ({ make }) => {
  let backend: Backend;
  beforeAll(() => {
    backend = make();
  });
  afterAll(async () => {
    await backend.stop();
  });

  it("a task is never handled before its runAt, each once, in the order asked", async () => {
    const { rt: submitter } = await backend.runtime();
    const { rt: workerRt } = await backend.runtime();
    const ledger: Handled[] = [];
    const worker = workerRt.workers.start<{ n: number }, number>({
      queue: "later",
      concurrency: 16,
      handler: (task) => {
        ledger.push({ job: task.jobId, index: task.index, at: Date.now() });
        return task.payload.n;
      },
    });
    const now = Date.now();
    // Asked out of index order: task 0 last, task 4 first; task 5 in the past (now).
    const due = [now + 1500, now + 1200, now + 900, now + 600, now + 300, now - 60_000];
    const job = await submitter.jobs.submit({
      queue: "later",
      tasks: due.map((_, n) => ({ n })),
      taskRunAt: due.map((at) => new Date(at)),
    });
    const whole = await submitter.jobs.submit({ queue: "later", tasks: [{ n: 0 }, { n: 1 }], delayMs: 700 });
    const wholeDue = now + 700;
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 6 });
    expect(await whole.done()).toMatchObject({ status: "succeeded", done: 2 });
    await worker.stop();

    const mine = ledger.filter((h) => h.job === job.id);
    expect(mine.map((h) => h.index).sort()).toEqual([0, 1, 2, 3, 4, 5]);
    for (const h of mine) expect(h.at).toBeGreaterThanOrEqual(due[h.index] ?? 0);
    // Handled in the order of their due times: 5 (past), 4, 3, 2, 1, 0.
    expect(mine.map((h) => h.index)).toEqual([5, 4, 3, 2, 1, 0]);
    const wholeHandled = ledger.filter((h) => h.job === whole.id);
    expect(wholeHandled.map((h) => h.index).sort()).toEqual([0, 1]);
    for (const h of wholeHandled) expect(h.at).toBeGreaterThanOrEqual(wholeDue);
    expect(await backend.heldStored("later", job.id)).toBe(0);
  });

  it("a job whose tasks are not due yet does not stall", async () => {
    const { rt } = await backend.runtime();
    const worker = rt.workers.start<number, number>({ queue: "patient", handler: (task) => task.payload });
    // Stalls after 200 ms without progress, but its tasks are held for 1.2 s.
    const job = await rt.jobs.submit({ queue: "patient", tasks: [1, 2], delayMs: 1200, stallAfterMs: 200 });
    const statuses = new Set<string>();
    job.subscribe((s) => statuses.add(s.status));
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 2 });
    await worker.stop();
    expect([...statuses].filter((s) => s === "stalled")).toEqual([]);
  });

  it("a job cancelled before its time never runs, and nothing of it stays held", async () => {
    const { rt } = await backend.runtime();
    const ledger: Handled[] = [];
    const worker = rt.workers.start<{ n: number }, number>({
      queue: "cancelled",
      handler: (task) => {
        ledger.push({ job: task.jobId, index: task.index, at: Date.now() });
        return task.payload.n;
      },
    });
    const runAt = Date.now() + 800;
    const doomed = await rt.jobs.submit({ queue: "cancelled", tasks: [{ n: 1 }, { n: 2 }, { n: 3 }], runAt });
    // Its time, as the handle and the record show it (from any runtime).
    expect(doomed.snapshot().runAt).toBe(runAt);
    expect((await rt.jobs.record(doomed.id))?.runAt).toBe(runAt);
    const { rt: other } = await backend.runtime();
    expect((await other.jobs.get(doomed.id))?.snapshot()).toMatchObject({ runAt, status: "running" });
    expect(await backend.heldStored("cancelled", doomed.id)).toBe(3);
    await doomed.cancel("changed my mind");
    expect(await backend.heldStored("cancelled", doomed.id)).toBe(0);
    // A job due after the cancelled one's time: once it is handled, the cancelled one was due too.
    const control = await rt.jobs.submit({ queue: "cancelled", tasks: [{ n: 0 }], runAt: runAt + 200 });
    expect(await control.done()).toMatchObject({ status: "succeeded" });
    await worker.stop();
    expect(ledger.filter((h) => h.job === doomed.id)).toEqual([]);
    // Not moved either: nothing of it waits on its own subject for a consumer that is gone.
    expect(await backend.tasksStored("cancelled", doomed.id)).toBe(0);
    expect(await backend.heldStored("cancelled", doomed.id)).toBe(0);
    expect((await doomed.done()).status).toBe("failed");
  });

  it("a submit rolled back leaves nothing held that fires later", async () => {
    const { rt, faults } = await backend.runtime();
    const ledger: Handled[] = [];
    const worker = rt.workers.start<{ n: number }, number>({
      queue: "rolled",
      handler: (task) => {
        ledger.push({ job: task.jobId, index: task.index, at: Date.now() });
        return task.payload.n;
      },
    });
    const runAt = Date.now() + 600;
    // The commit point fails after the tasks were held: the submit rolls itself back.
    faults.fail("createConsumer", 1);
    await expect(
      rt.jobs.submit({ queue: "rolled", tasks: [{ n: 1 }, { n: 2 }], runAt, idempotencyKey: "roll-me" }),
    ).rejects.toThrow(/injected fault/);
    expect(faults.injected("createConsumer")).toBe(1);
    const rolledBack = await rt.jobs.record(jobIdOf("rolled", "roll-me"));
    expect(rolledBack).toMatchObject({ phase: "rolledBack" });
    expect(await backend.heldStored("rolled", rolledBack!.id)).toBe(0);
    const control = await rt.jobs.submit({ queue: "rolled", tasks: [{ n: 0 }], runAt: runAt + 200 });
    expect(await control.done()).toMatchObject({ status: "succeeded" });
    await worker.stop();
    expect(ledger.filter((h) => h.job !== control.id)).toEqual([]);
    expect(await backend.tasksStored("rolled", rolledBack!.id)).toBe(0);
    expect(await backend.heldStored("rolled", rolledBack!.id)).toBe(0);
  });

  it("a submitter stopped after its commit: the runtime that takes the job over moves its tasks on time", async () => {
    // Short leases: the stopped submitter's job is taken over within a second or two.
    const leases: RuntimeOptions = { jobs: { cleanupIntervalMs: 0, leaseMs: 400 } };
    const { rt: submitter } = await backend.runtime(leases);
    const { rt: taker } = await backend.runtime(leases);
    const ledger: Handled[] = [];
    const worker = taker.workers.start<{ n: number }, number>({
      queue: "orphaned",
      handler: (task) => {
        ledger.push({ job: task.jobId, index: task.index, at: Date.now() });
        return task.payload.n;
      },
    });
    // Due after the takeover (moved at its time by the taker) and one due before it (moved once
    // taken over): neither is moved by the submitter, stopped right after the commit.
    const runAt = Date.now() + 2500;
    const later = await submitter.jobs.submit({ queue: "orphaned", tasks: [{ n: 1 }, { n: 2 }], runAt });
    const soon = await submitter.jobs.submit({ queue: "orphaned", tasks: [{ n: 3 }], delayMs: 50 });
    await submitter.stop();
    expect(await backend.heldStored("orphaned", later.id)).toBe(2);
    // The taker's handles only once the tasks ran: a `get` would watch the job here by itself.
    await waitUntil(() => ledger.length === 3, {
      timeoutMs: 15_000,
      message: () =>
        `every task of the orphaned jobs handled (later ${later.id}, soon ${soon.id}; handled: ${JSON.stringify(ledger)})`,
    });
    await worker.stop();
    const forLater = ledger.filter((h) => h.job === later.id);
    expect(forLater.map((h) => h.index).sort()).toEqual([0, 1]);
    for (const h of forLater) expect(h.at).toBeGreaterThanOrEqual(runAt);
    expect(ledger.filter((h) => h.job === soon.id).map((h) => h.index)).toEqual([0]);
    expect(await backend.heldStored("orphaned", later.id)).toBe(0);
    // Its end as recorded: a handle shows no end before (the taker may be writing it still).
    expect((await (await taker.jobs.get(later.id))!.done()).status).toBe("succeeded");
  });
});
