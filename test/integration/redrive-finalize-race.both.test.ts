/**
 * A redrive made between a job's end and its supervisor's clean-up of its
 * tasks (the consumer's delete and the purge that follow the end's write):
 * the redrive reads the job ended, publishes the dead task again and reopens
 * the record; then the supervisor's clean-up runs. It must remove only what
 * was stored before the end, never the redriven task. Runtime A supervises
 * (its first `removeTasks` of the job is held until the redrive is done);
 * runtime B redrives and runs the worker, which is stopped while the
 * clean-up is held, so the redriven task waits stored, as behind a backlog.
 * The oracles: the server's own count of the job's stored tasks after the
 * clean-up, the handler's ledger (the dead task ran again), and the job's
 * end as B reads it.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobTasksRef } from "../../src/kernel/job-record.ts";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil } from "../harness/wait.ts";

/** The supervisors' lease in this test (the sides' default: 2 s). */
const leaseMs = 600;

describe.each([
  ["memory", () => memorySide({ leaseMs })],
  ["nats", () => natsSide({ leaseMs })],
] as const)("a redrive made while the job's end is still being cleaned up, on %s", (_kind, makeSide) => {
  it("keeps the redriven task: it runs, and the job succeeds", { timeout: 40_000 }, async () => {
    const side = await makeSide();
    let releaseCleanup: () => void = () => undefined;
    const cleanupHeld = new Promise<void>((resolve) => {
      releaseCleanup = resolve;
    });
    let cleanedUp: Promise<unknown> | undefined;
    const holdFirstCleanup = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        if (name !== "removeTasks" || (args[0] as JobTasksRef).queue !== "race" || cleanedUp) return call();
        cleanedUp = cleanupHeld.then(call);
        return cleanedUp;
      }).broker;
    const a = await side.runtime("a", holdFirstCleanup);
    const b = await side.runtime("b");
    const flaky = flakyWorker(b, "race", { dying: 1, concurrency: 2 });
    let worker = flaky.start();
    try {
      const job = await submitDying(a, "race");
      await waitUntil(() => cleanedUp !== undefined, {
        timeoutMs: 15_000,
        message: "A's end written, its clean-up held",
      });
      expect(await (await b.jobs.get(job.id))?.done()).toMatchObject({ status: "failed", dead: 1 });
      await worker.stop();
      flaky.mend();
      const again = await b.jobs.redrive(job.id);
      releaseCleanup();
      await cleanedUp;
      expect(await side.storedTasks("race", job.id)).toBe(1);
      worker = flaky.start();
      const end = await Promise.race([
        again.done(),
        new Promise((resolve) => setTimeout(() => resolve("no end in 15 s"), 15_000)),
      ]);
      expect(end).toMatchObject({ status: "succeeded", done: 2, dead: 0 });
      expect(flaky.ran.filter(([i]) => i === 1)).toHaveLength(2);
    } finally {
      releaseCleanup();
      await worker.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
