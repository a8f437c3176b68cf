/**
 * Review of 5cb8e9b: once its record is written (the job reopened, `dead`
 * lowered, the record naming the redrive), a redrive lists the job's letters
 * again, before its lease and its publish. A listing that fails there (the
 * server not answering) rejects the redrive with the record left reopened
 * and nothing published: unlike a publish that fails, the record is not put
 * back. The caller tries again, as a `TransientBrokerError` invites: the same
 * letters name the same redrive, which finds its id in the record and
 * resolves, doing nothing. The job says running with nothing to run, and the
 * dead task never runs again (until the job stalls). Oracles: the record and
 * tasks as the server stores them, the handler's ledger.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { TransientBrokerError } from "../../src/kernel/errors.ts";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)(
  "a redrive whose second listing of the letters fails, then is made again, on %s",
  (_k, makeSide) => {
    it("the retry sends the dead task back, and the job ends", { timeout: 60_000 }, async () => {
      const side = await makeSide();
      let failing = false;
      let failed = 0;
      let listings = 0;
      const flakyList = (inner: Broker) =>
        spiedBroker(inner, (name, _n, _args, call) => {
          if (name !== "listDeadLetters" || !failing) return call();
          // The second listing of the redrive: after its record write.
          if (++listings === 2) {
            failed++;
            return Promise.reject(
              new TransientBrokerError({ message: "injected: letters not listed", operation: "dead.list" }),
            );
          }
          return call();
        }).broker;
      const a = await side.runtime("a");
      const b = await side.runtime("b", flakyList, false);
      const queue = "relist-failed";
      const flaky = flakyWorker(a, queue);
      const worker = flaky.start();
      try {
        const job = await submitDying(a, queue);
        expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
        flaky.mend();
        failing = true;
        const first = await b.jobs.redrive(job.id, [0]).then(
          () => "resolved",
          (e: unknown) => (e instanceof Error ? e.name || e.constructor.name : String(e)),
        );
        failing = false;
        expect(failed).toBe(1);
        expect(first).not.toBe("resolved");
        // As the server stores it now: reopened, 0 dead, and no task to run.
        const between = await side.stored(job.id);
        const tasksBetween = await side.storedTasks(queue, job.id);
        // The caller tries again; the server answers now.
        await b.jobs.redrive(job.id, [0]);
        await waitUntil(async () => (await side.stored(job.id))?.status === "succeeded", {
          timeoutMs: 10_000,
          message: "the job succeeded after the retry",
        }).catch(async (e: unknown) => {
          throw new Error(
            `${(e as Error).message}: the job after the retry ${JSON.stringify(await side.stored(job.id))}, ` +
              `tasks stored ${await side.storedTasks(queue, job.id)}, task 0 ran ${JSON.stringify(flaky.ran.filter(([i]) => i === 0))}; ` +
              `after the failed call: ${JSON.stringify(between)}, tasks stored ${tasksBetween}`,
          );
        });
        expect(flaky.ran.filter(([i]) => i === 0)).toEqual([
          [0, "threw"],
          [0, "ok"],
        ]);
      } finally {
        await worker.stop();
        await b.stop();
        await a.stop();
        await side.dispose();
      }
    });
  },
);
