/**
 * A redrive refused in its record write: it read the job running with a
 * dead task, then the job was cancelled (a task still unanswered) before
 * its write, which finds it over and refuses, typed. By then it had made
 * the job's consumer again (the cancel's clean-up had deleted it) and
 * stored its marker ("forget task 0's dead answer"). Both stayed: the
 * consumer until the cleanup pass, the marker for good, and a reader of
 * the job's results no longer saw task 0's death. A refused redrive must
 * leave nothing the job's end does not own. Runtime A runs the job and
 * the worker; runtime B redrives, held once it has read the job (its
 * consumer's make, the step after) until the cancel is cleaned up. The
 * oracles: the consumer and the results as the server stores them, the
 * record, the handler's ledger.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { lastSaid } from "../harness/raw-results.ts";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)(
  "a redrive refused in its record write (the job cancelled meanwhile), on %s",
  (_kind, makeSide) => {
    it("leaves neither the consumer it made again nor its marker", { timeout: 40_000 }, async () => {
      const side = await makeSide();
      const release = gate();
      const reached = gate();
      const resume = gate();
      const holdAfterRead = (inner: Broker) =>
        spiedBroker(inner, (name, _n, _args, call) => {
          if (name !== "createConsumer") return call();
          reached.open();
          return resume.opened.then(call);
        }).broker;
      const a = await side.runtime("a");
      const b = await side.runtime("b", holdAfterRead);
      const queue = "refused";
      // Task 0 dies at once; task 1 waits in its handler until the test ends.
      const flaky = flakyWorker(a, queue, { concurrency: 2, before: () => release.opened });
      const worker = flaky.start();
      try {
        const job = await submitDying(a, queue);
        await waitUntil(async () => (await side.stored(job.id))?.counts.dead === 1, {
          timeoutMs: 10_000,
          message: "task 0 dead",
        });
        flaky.mend();
        const redrive = b.jobs.redrive(job.id).then(
          () => undefined,
          (error: unknown) => error,
        );
        await reached.opened;
        await job.cancel("enough");
        await waitUntil(async () => !(await side.storedConsumer(queue, job.id)), {
          timeoutMs: 10_000,
          message: "the cancel's clean-up deleted the job's consumer",
        });
        resume.open();
        expect(await redrive).toMatchObject({ _tag: "InvalidArgument", field: "id" });
        expect(await side.stored(job.id)).toMatchObject({
          status: "failed",
          reason: "cancelled: enough",
          counts: { done: 0, dead: 1 },
        });
        // Before: the consumer made again stayed (until the cleanup pass), and the marker left task 0
        // taken back, its death gone from what the job's results say.
        expect(await side.storedConsumer(queue, job.id), "the job's consumer").toBe(false);
        expect(lastSaid(await side.storedResults(queue, job.id), 0)).toBe("dead");
        expect(flaky.ran.filter(([index]) => index === 0)).toEqual([[0, "threw"]]);
      } finally {
        resume.open();
        release.open();
        await worker.stop();
        await b.stop();
        await a.stop();
        await side.dispose();
      }
    });
  },
);
