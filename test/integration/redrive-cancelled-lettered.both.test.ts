/**
 * A job cancelled while a redrive's letter is still listed: the redrive
 * reopened the job (failed, task 0 dead) and published its copy, then failed
 * to remove task 0's letter (its process gone: the caller told it failed).
 * Before the copy ran, the user cancelled the job: `failed`, "cancelled:
 * enough", task 0 never answered (its death taken back by the marker), its
 * letter still listed. A redrive then (the caller's retry of the failed one,
 * say) must be refused as for any cancelled job with tasks never answered
 * (redrive-cancelled.both.test.ts; architecture.md: "Still refused otherwise
 * (a cancelled job's tasks never answered have no letter)"), and the job
 * stay cancelled. Since the reopening of a job over whose every unanswered
 * task is lettered (`unansweredTasks`), it is reopened: running, the
 * cancel's reason dropped, and it runs the task the user cancelled. Oracles:
 * the record as the server stores it, the handler's ledger.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { delay, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a redrive of a job cancelled with a redrive's letter left, on %s", (_kind, makeSide) => {
  it("is refused, and the job stays cancelled", { timeout: 60_000 }, async () => {
    const side = await makeSide();
    // B's process is gone once its copy is published: its letters are never removed.
    const goneAtRemoval = (inner: Broker) =>
      spiedBroker(inner, (name, _n, _args, call) =>
        name === "removeDeadLetters" ? Promise.reject(new Error("process gone")) : call(),
      ).broker;
    const a = await side.runtime("a");
    const b = await side.runtime("b", goneAtRemoval, false);
    const queue = "cancelled_lettered";
    const flaky = flakyWorker(a, queue);
    const runsOf = (index: number) => flaky.ran.filter(([i]) => i === index).map(([, r]) => r);
    let worker = flaky.start();
    try {
      const job = await submitDying(a, queue);
      expect(await job.done()).toMatchObject({ status: "failed", done: 1, dead: 1 });
      // No worker for the copy: it waits stored until the cancel purges it.
      await worker.stop();
      flaky.mend();
      await expect(b.jobs.redrive(job.id)).rejects.toThrow(/process gone/);
      await waitUntil(async () => (await side.stored(job.id))?.status === "running", {
        timeoutMs: 10_000,
        message: "the job reopened by B",
      });
      const reopened = await a.jobs.get(job.id);
      await reopened?.cancel("enough");
      expect(await side.stored(job.id)).toMatchObject({ status: "failed", reason: "cancelled: enough" });
      expect((await a.jobs.deadLetters(job.id)).map((l) => l.index)).toEqual([0]);
      worker = flaky.start();
      const redrive = await a.jobs.redrive(job.id).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(await side.stored(job.id)).toMatchObject({
        status: "failed",
        reason: "cancelled: enough",
        counts: { done: 1, dead: 0 },
      });
      expect(redrive).toMatchObject({ _tag: "InvalidArgument", field: "id" });
      // Nothing of the cancelled job runs again.
      await delay(500);
      expect(runsOf(0)).toEqual(["threw"]);
    } finally {
      await worker.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
