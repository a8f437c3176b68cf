/**
 * Two runtimes redrive the same dead task at once (the same letters, so the
 * same redrive id and marker id). B reads the letters first and is held at
 * its marker; A's redrive then fails at its copy's publish: it stores task
 * 0's death again under a new letter (`keepDead`) and rejects. B goes on: its
 * marker is dropped by the server (A's, the same id, is stored), its record
 * write reopens the job, its copy is published and runs, and B resolves. The
 * copy's success must count: B's redrive was accepted and ran the task.
 * Before `keepDead`, the job succeeded so. With it, the death A stored again
 * after the shared marker is the task's counted answer, B's copy's success
 * lands after it as a duplicate, and the job ends failed with the task dead
 * and a letter to run it a third time. Oracles: the handler's ledger, the
 * record as the server stores it, the raw results.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { flakyWorker, holdMarkers, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil, within } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("two redrives of one task at once, one failing at its copy, on %s", (_kind, makeSide) => {
  it("the one that resolved ran the task: its success counts", { timeout: 60_000 }, async () => {
    const side = await makeSide();
    // A's copies are never published.
    const refuseCopies = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) =>
        name === "publishTasks" && (args[0] as JobRecord).submitId.startsWith("r")
          ? Promise.reject(new Error("publish refused"))
          : call(),
      ).broker;
    const hold = holdMarkers();
    const a = await side.runtime("a", refuseCopies);
    const b = await side.runtime("b", hold.wrap, false);
    const queue = "kept_dead_race";
    const flaky = flakyWorker(a, queue);
    const runsOf = (index: number) => flaky.ran.filter(([i]) => i === index).map(([, r]) => r);
    const worker = flaky.start();
    try {
      const job = await submitDying(a, queue);
      expect(await job.done()).toMatchObject({ status: "failed", done: 1, dead: 1 });
      flaky.mend();
      // B has read task 0's letter, held at its marker.
      const redriveB = b.jobs.redrive(job.id).then(
        () => "resolved",
        (error: unknown) => error,
      );
      await hold.reached.opened;
      await expect(a.jobs.redrive(job.id)).rejects.toThrow(/the deaths of tasks 0 are stored again/);
      hold.held.open();
      expect(await redriveB).toBe("resolved");
      await waitUntil(() => runsOf(0).length === 2, { timeoutMs: 15_000, message: "B's copy ran" });
      expect(runsOf(0)).toEqual(["threw", "ok"]);
      const handle = await a.jobs.get(job.id);
      // B's copy answered: the job counts it.
      expect(await within(handle?.done() ?? Promise.resolve(undefined), 15_000)).toMatchObject({
        status: "succeeded",
        done: 2,
        dead: 0,
      });
      expect(await side.stored(job.id)).toMatchObject({
        status: "succeeded",
        counts: { done: 2, failed: 0, dead: 0 },
      });
      expect(await a.jobs.deadLetters(job.id)).toEqual([]);
    } finally {
      hold.held.open();
      await worker.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
