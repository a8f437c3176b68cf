/**
 * A redrive of a job that ended with tasks never answered (cancelled, here;
 * a stalled timeout or tasks lost end the same way): its end removed those
 * tasks, so a job reopened could never finish. The redrive reopened it
 * anyway, running, the cancel's reason dropped, and it waited for good for
 * tasks that no longer existed. It is refused now, typed, and the job stays
 * as it ended. The oracles: the record read from the server's store, the
 * handler's ledger.
 */
import { describe, expect, it } from "vitest";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a redrive of a job cancelled with tasks unanswered, on %s", (_kind, makeSide) => {
  it("is refused, and the job stays cancelled", { timeout: 40_000 }, async () => {
    const side = await makeSide();
    const release = gate();
    const a = await side.runtime("a");
    // Task 0 dies at once; task 1 waits in its handler until the test ends.
    const flaky = flakyWorker(a, "cancelled_dead", { concurrency: 2, before: () => release.opened });
    const worker = flaky.start();
    try {
      const job = await submitDying(a, "cancelled_dead");
      await waitUntil(async () => (await side.stored(job.id))?.counts.dead === 1, {
        timeoutMs: 10_000,
        message: "task 0 dead",
      });
      await job.cancel("enough");
      expect(await side.stored(job.id)).toMatchObject({ status: "failed", reason: "cancelled: enough" });
      flaky.mend();
      const refused = await a.jobs.redrive(job.id).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(refused).toMatchObject({ _tag: "InvalidArgument", field: "id" });
      expect(await side.stored(job.id)).toMatchObject({
        status: "failed",
        reason: "cancelled: enough",
        counts: { done: 0, dead: 1 },
      });
      // Task 0 ran once (and died), no more.
      expect(flaky.ran.filter(([index]) => index === 0)).toEqual([[0, "threw"]]);
    } finally {
      release.open();
      await worker.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
