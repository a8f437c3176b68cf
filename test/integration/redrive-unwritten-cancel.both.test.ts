/**
 * A cancel through the handle of a job whose end its supervisor (A) could
 * not write, after another runtime (B) redrove the job's dead task: the
 * cancel writes the answers A counted, which are the job's latest, but not
 * its dead ones. The redrive took the dead task off (its letter removed,
 * the task sent again), and A's actor, ended, never counted its marker.
 * Before, the cancel wrote `dead` 1 with no dead letter left. The oracle:
 * the record read from the server's store.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { jobActorOf } from "../../src/api/runtime-job-handle.ts";
import { PermanentBrokerError } from "../../src/kernel/errors.ts";
import { isFinal, type JobRecord } from "../../src/kernel/job-record.ts";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil, within } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)(
  "a cancel after a redrive, through a handle whose end was not written, on %s",
  (_kind, makeSide) => {
    it("writes the answers its runtime counted, but not the dead task the redrive took off", async () => {
      const side = await makeSide();
      // A's store refuses every end until the cancel: A's actor ends with its end unwritten.
      let refusing = true;
      const refuseEnds = (inner: Broker) =>
        spiedBroker(inner, (name, _n, args, call) =>
          refusing && name === "updateRecord" && isFinal((args[0] as JobRecord).status)
            ? Promise.reject(new PermanentBrokerError({ message: "refused", operation: "job.record.update" }))
            : call(),
        ).broker;
      // Neither takes the job over: A's end is left unwritten.
      const a = await side.runtime("a", refuseEnds, false);
      const b = await side.runtime("b", undefined, false);
      const flaky = flakyWorker(b, "unwritten-redrive");
      const worker = flaky.start();
      try {
        const job = await submitDying(a, "unwritten-redrive");
        await waitUntil(() => jobActorOf(job).getSnapshot().status !== "active", {
          timeoutMs: 15_000,
          message: "A's actor to end with its end not written",
        });
        expect(job.snapshot()).toMatchObject({ status: "running", done: 1, dead: 1 });
        await waitUntil(async () => (await b.jobs.deadLetters(job.id)).length === 1, {
          timeoutMs: 15_000,
          message: "task 0's dead letter stored",
        });
        await worker.stop();
        await b.jobs.redrive(job.id);
        expect(await side.stored(job.id)).toMatchObject({ status: "running", counts: { dead: 0 } });
        refusing = false;
        const cancelled = await within(job.cancel("after the redrive"), 10_000);
        expect(cancelled).toMatchObject({ status: "failed", reason: "cancelled: after the redrive" });
        expect(await side.stored(job.id)).toMatchObject({
          status: "failed",
          counts: { done: 1, failed: 0, dead: 0 },
        });
      } finally {
        await worker.stop();
        await a.stop();
        await b.stop();
        await side.dispose();
      }
    });
  },
);
