/**
 * A redrive whose runtime dies between its record write (the job reopened,
 * `dead` lowered, its letter still there) and its tasks' publish. The job
 * says running with nothing to run; its supervisor let it go at its end.
 * It must not wait silently for ever: a supervisor takes it over (the
 * redrive's lease is written with the record, before the publish) and sees
 * it stall, which every reader is told (`stalled`, and its stalled timeout
 * from then on); before, nobody supervised it and it said running. Runtime A
 * runs the job and the worker; runtime B redrives and "dies" in its publish
 * (held until the test ends, then refused). The oracle: the record read from
 * the server's store.
 *
 * The same redrive made again once the job stalled (the same letters: the
 * same redrive id) must run the task. It found its id in the record and did
 * nothing, and returned as if it had: the job stayed stalled for good, its
 * letter there and never redriven. Oracles: the record as stored, the dead
 * letters, the handler's ledger.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import {
  expectRedriveSucceeded,
  flakyWorker,
  memorySide,
  natsSide,
  submitDying,
} from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a redrive that dies before it publishes, on %s", (_kind, makeSide) => {
  it.each([
    ["leaves a job a supervisor sees stall, not one that says running for good", false],
    ["made again once the job stalled, runs the task: the job succeeds", true],
  ])("%s", { timeout: 60_000 }, async (_name, again) => {
    const side = await makeSide();
    const died = gate();
    let publishing = false;
    const dieInPublish = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        if (name !== "publishTasks" || !(args[0] as JobRecord).submitId.startsWith("r")) return call();
        publishing = true;
        return died.opened.then(() => Promise.reject(new Error("the process died")));
      }).broker;
    const a = await side.runtime("a");
    const b = await side.runtime("b", dieInPublish);
    const flaky = flakyWorker(a, "dies");
    const worker = flaky.start();
    try {
      const job = await submitDying(a, "dies", { stallAfterMs: 300 });
      expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
      flaky.mend();
      const redrive = b.jobs.redrive(job.id).catch(() => undefined);
      await waitUntil(() => publishing, { timeoutMs: 15_000, message: "the redrive reached its publish" });
      expect(await side.stored(job.id)).toMatchObject({ status: "running", counts: { dead: 0 } });
      // B is gone from here on: nothing of its redrive is published.
      await waitUntil(async () => (await side.stored(job.id))?.status === "stalled", {
        timeoutMs: 30_000,
        message: "the reopened job, its task never published, seen stalled by a supervisor",
      });
      if (again) {
        // B still "dead" (its publish held): A makes the same redrive.
        expect(await a.jobs.deadLetters(job.id)).toHaveLength(1);
        await a.jobs.redrive(job.id);
        // Before: the record stayed stalled, the letter stayed, the task never ran again.
        await waitUntil(async () => (await side.stored(job.id))?.status === "succeeded", {
          timeoutMs: 15_000,
          message: "the job, its task redriven again, succeeded",
        });
        await expectRedriveSucceeded(side, a.jobs, job.id, flaky);
      }
      died.open();
      await redrive;
      // B's publish refused at last: its put-back leaves a job that is over as it is.
      if (again) expect(await side.stored(job.id)).toMatchObject({ status: "succeeded" });
    } finally {
      died.open();
      await worker.stop();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
