/**
 * A watcher (a runtime that does not supervise the job) that has counted
 * every answer waits for the supervisor to write the end, reading the record
 * every few hundred ms. `rt.stop()` must end that wait: the job's finalize
 * runs beside its actor, and the actor's end aborts it. Here the
 * supervisor's end write is held, so the watcher is still waiting when it
 * stops; its broker's record reads are counted after the stop.
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
    try {
      const job = await a.jobs.submit<number, number>({ queue: "q", tasks: [1, 2] });
      const watched = await b.jobs.get<number>(job.id);
      const worker = a.workers.start<number, number>({ queue: "q", handler: (t) => t.payload });
      // B has counted both answers and reads the record, waiting for the end A does not write.
      const reads = () => spied.calls.get("getRecord") ?? 0;
      await waitUntil(() => watched?.snapshot().done === 2, { timeoutMs: 5000, message: "B counted both" });
      const before = reads();
      await waitUntil(() => reads() > before, { timeoutMs: 5000, message: "B waits for the end" });
      await worker.stop();
      await b.stop();
      const atStop = reads();
      await new Promise((resolve) => setTimeout(resolve, 1500));
      expect(reads() - atStop, "record reads after B stopped").toBe(0);
    } finally {
      release();
      await b.stop();
      await a.stop();
    }
  });
});
