/**
 * A runtime that still takes itself for a job's supervisor after another
 * runtime took the job over: stalled past its lease, it woke with its lease
 * held by its own clock, and the record names the taker. Its record watch is
 * then placed again (a reconnect), and each job it watches gets its record
 * read again; a job it supervises gets its consumer made again if the server
 * lost it (`jobs.memoryConsumers`, a restart). The lease alone gated that
 * restore: the deposed runtime made the consumer again for a job the taker
 * supervises (its tasks run for a supervisor that writes nothing of them, or
 * a consumer left behind the taker's end). On the memory broker: A's watch
 * placed again by its own callback, B's take a write of the record naming
 * B. Oracles: the restores A's broker was asked for, and the consumers the
 * server holds; a job A still supervises is restored (the control). And
 * the gate itself: an actor that took the lease acts as the supervisor only
 * once its take's write is stored (`seen.fenced`).
 */
import { afterEach, describe, expect, it } from "vitest";
import { createMemoryBroker, createMemoryServer } from "../../src/adapters/memory/memory-broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { restoreSupervised } from "../../src/api/job-takeover.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { takeRecord } from "../../src/effects/take-record.ts";
import type { JobTasksRef } from "../../src/kernel/job-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe("a deposed runtime whose record watch is placed again", () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("makes no consumer again for a job whose record names another supervisor", async () => {
    const server = createMemoryServer({ prefix: "jetstate" });
    cleanups.push(async () => server.close());
    const { tasks } = memoryServerState(server);
    let placedAgain: ((restarted: boolean) => void) | undefined;
    let watchPlaced = false;
    const restoresAsked: string[] = [];
    // The deposed job's read again answered first: the control's read, and all that follows it,
    // comes after what A does with the deposed job's record.
    const takenRead = gate();
    let takenId: string | undefined;
    let keptId: string | undefined;
    const a = spiedBroker(createMemoryBroker({ server, holder: "memory.a" }), (key, _n, args, call) => {
      if (key === "watchRecordChanges") placedAgain = args[2] as (restarted: boolean) => void;
      if (key === "restoreConsumer") restoresAsked.push((args[0] as JobTasksRef).id);
      if (key === "getRecord" && watchPlaced) {
        if (args[0] === takenId)
          return (call() as Promise<unknown>).finally(() => setImmediate(takenRead.open));
        if (args[0] === keptId) return takenRead.opened.then(call);
      }
      return call();
    });
    const rt: Runtime = await createRuntime({
      broker: a.broker,
      logger: silentLogger(),
      jobs: { cleanupIntervalMs: 0, takeOver: false },
    });
    cleanups.push(() => rt.stop());
    // No worker: both jobs run, their tasks stored.
    const taken = await rt.jobs.submit({ queue: "q", tasks: [1], lane: false });
    const kept = await rt.jobs.submit({ queue: "q", tasks: [2], lane: false });
    takenId = taken.id;
    keptId = kept.id;
    expect(placedAgain, "A's record watch placed").toBeDefined();
    // B took `taken` over while A was held up: its first act, the record naming it.
    const b = createMemoryBroker({ server, holder: "memory.b" });
    cleanups.push(() => b.close());
    const found = await b.getRecord(taken.id);
    expect(
      await takeRecord(b, taken.id, { submit: found?.record.submitId }, b.leases.holder),
      "B's take of the record",
    ).toBe("taken");
    // The server lost both consumers (kept in its memory, it restarted).
    tasks.deleteConsumer(taken.id);
    tasks.deleteConsumer(kept.id);
    expect(tasks.consumer(taken.id)).toBeUndefined();
    // By its clock, A still holds both leases.
    expect(a.broker.leases.holds(taken.id)).toBe(true);
    expect(a.broker.leases.holds(kept.id)).toBe(true);
    watchPlaced = true;
    placedAgain?.(false);
    await waitUntil(() => tasks.consumer(kept.id) !== undefined, {
      timeoutMs: 10_000,
      message: "the consumer of the job A supervises made again",
    });
    expect(restoresAsked, "the restores A asked for").toEqual([kept.id]);
    expect(tasks.consumer(taken.id), "a consumer for the job B supervises").toBeUndefined();
  });

  it("makes none again for a job whose actor took the lease, its take's write not stored yet", async () => {
    const server = createMemoryServer({ prefix: "jetstate" });
    cleanups.push(async () => server.close());
    const { tasks } = memoryServerState(server);
    const broker = createMemoryBroker({ server, holder: "memory.a" });
    const rt: Runtime = await createRuntime({
      broker,
      logger: silentLogger(),
      jobs: { cleanupIntervalMs: 0, takeOver: false },
    });
    cleanups.push(() => rt.stop());
    const job = await rt.jobs.submit({ queue: "q", tasks: [1], lane: false });
    const found = await broker.getRecord(job.id);
    expect(found?.record, "the record, naming no one").toMatchObject({ status: "running" });
    expect(found?.record.supervisor).toBeUndefined();
    expect(broker.leases.holds(job.id)).toBe(true);
    tasks.deleteConsumer(job.id);
    const log = silentLogger();
    // The record names no one, and the lease is held: an actor that took the lease acts as the
    // supervisor only once its take's write names it.
    await restoreSupervised(broker, log, Date.now(), found!.record, { fenced: false });
    expect(tasks.consumer(job.id), "a consumer made before the take's write").toBeUndefined();
    await restoreSupervised(broker, log, Date.now(), found!.record, { fenced: true });
    expect(tasks.consumer(job.id), "the consumer, made again once it is named").toBeDefined();
  });
});
