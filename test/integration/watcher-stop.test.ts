/**
 * A watcher (a runtime that does not supervise the job) that has counted
 * every answer waits for the supervisor to write the end, reading the record
 * every few hundred ms. `rt.stop()` must end that wait: the job's finalize
 * runs beside its actor, and the actor's end aborts it. Here the
 * supervisor's end write is held, so the watcher is still waiting when it
 * stops; its broker's record reads are counted after the stop. The barrier
 * that says "long enough": a second watcher (C), left running, waits the same
 * way on the same cadence; once C has read the record three times since B
 * stopped, B's wait, had it gone on, would have read it too.
 */
import { describe, expect, it } from "vitest";
import { createTestRuntime } from "../../src/api/runtime.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { isFinal } from "../../src/kernel/job-record.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil } from "../harness/wait.ts";

describe("a watcher waiting for a job's end", () => {
  it("stops waiting when its runtime stops: no record read after rt.stop()", {
    timeout: 15_000,
  }, async () => {
    const server = createMemoryServer();
    // A's end write waits for `release`: the job stays running in the record meanwhile.
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const a = await createTestRuntime({
      name: "a",
      broker: spiedBroker(createMemoryBroker({ server }), (name, _n, args, call) => {
        if (name !== "updateRecord" || !isFinal((args[0] as JobRecord).status)) return call();
        return released.then(call);
      }).broker,
    });
    const spied = spiedBroker(createMemoryBroker({ server }));
    const b = await createTestRuntime({ name: "b", broker: spied.broker, jobs: { takeOver: false } });
    // The control: a watcher like B that is never stopped while the test looks.
    const control = spiedBroker(createMemoryBroker({ server }));
    const c = await createTestRuntime({ name: "c", broker: control.broker, jobs: { takeOver: false } });
    try {
      const job = await a.jobs.submit<number, number>({ queue: "q", tasks: [1, 2] });
      const watched = await b.jobs.get<number>(job.id);
      const controlWatched = await c.jobs.get<number>(job.id);
      const worker = a.workers.start<number, number>({ queue: "q", handler: (t) => t.payload });
      // B (and C) have counted both answers and read the record, waiting for the end A does not write.
      const reads = () => spied.calls.get("getRecord") ?? 0;
      const controlReads = () => control.calls.get("getRecord") ?? 0;
      await waitUntil(() => watched?.snapshot().done === 2 && controlWatched?.snapshot().done === 2, {
        timeoutMs: 5000,
        message: "B and C counted both",
      });
      const before = reads();
      await waitUntil(() => reads() > before, { timeoutMs: 5000, message: "B waits for the end" });
      await worker.stop();
      await b.stop();
      const atStop = reads();
      // C's wait reads on the cadence B's did: three reads of C's since B stopped span two of its
      // pauses, each one B's wait, still going, would have ended with a read.
      const controlAtStop = controlReads();
      await waitUntil(() => controlReads() - controlAtStop >= 3, {
        timeoutMs: 10_000,
        message: "C, still waiting for the end, read the record three times after B stopped",
      });
      expect(reads() - atStop, "record reads after B stopped").toBe(0);
    } finally {
      release();
      await b.stop();
      await c.stop();
      await a.stop();
    }
  });
});
