/**
 * A redrive of a job still running (task 1 held in its handler, task 0
 * dead) whose marker is stored and record written, but whose copy of task 0
 * is not published (the server refusing, the process alive): its marker
 * took task 0's death back, and nothing answers for the task. The job
 * waited for it until it stalled, then ended with the task never answered,
 * and no redrive could reopen it (architecture.md, "Redrive", the limit
 * written down before). The redrive must reject, and leave the job counting
 * the task dead with a letter to redrive it by: the job ends `failed`, and
 * a redrive made again runs the task. Second case: the copy is stored but
 * its publish reports a failure (its outcome unknown to the redrive); the
 * copy runs once the redrive has rejected. Counted once either way: the job
 * ends, the next redrive's copy runs, and the job counts each task once.
 * Third case: the redrive's process is gone from the copy's publish on
 * (nothing of it runs after): the job stalls out with the task never
 * answered, its letter there, and the same redrive made from another
 * runtime must reopen it and run the task (it was refused: no redrive
 * could reopen the job). Oracles: the handler's ledger, the record as the
 * server stores it, the letters, and the entries the server stores.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { lastSaid } from "../harness/raw-results.ts";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a redrive whose copy is not published, on %s", (_kind, makeSide) => {
  it.each([
    ["refused", false],
    ["stored, said refused", true],
  ] as const)(
    "its copy %s: the job ends counting the task dead, and the next redrive runs it",
    { timeout: 60_000 },
    async (_how, stored) => {
      const side = await makeSide();
      let refusals = 0;
      const copyRuns = gate();
      // The redrive's first publish of its copy fails (after it is stored, when `stored`).
      const refuseFirstCopy = (inner: Broker) =>
        spiedBroker(inner, (name, _n, args, call) => {
          if (name !== "publishTasks" || !(args[0] as JobRecord).submitId.startsWith("r") || refusals > 0)
            return call();
          refusals++;
          // Stored: refused once the copy is in the handler, held there until `copy` opens.
          const publish = stored
            ? (call() as Promise<unknown>).then(() => copyRuns.opened)
            : Promise.resolve();
          return publish.then(() => Promise.reject(new Error("publish refused")));
        }).broker;
      const a = await side.runtime("a");
      const b = await side.runtime("b", refuseFirstCopy, false);
      const queue = stored ? "copy-unknown" : "copy-unpublished";
      // Task 1 answers once `second` opens: the job runs on while task 0 is redriven. A run of
      // task 0 that answers waits for `copy`: the first copy (stored) runs after the rejection.
      const second = gate();
      const copy = gate();
      const flaky = flakyWorker(a, queue, {
        before: (i) => {
          if (i === 1) return second.opened;
          copyRuns.open();
          return copy.opened;
        },
      });
      const runsOf = (index: number) => flaky.ran.filter(([i]) => i === index).map(([, r]) => r);
      const worker = flaky.start();
      try {
        const job = await submitDying(a, queue, { stallAfterMs: 1_000, stalledTimeoutMs: 2_000 });
        await waitUntil(async () => lastSaid(await side.storedResults(queue, job.id), 0) === "dead", {
          timeoutMs: 15_000,
          message: "task 0's death stored",
        });
        expect(await a.jobs.deadLetters(job.id)).toHaveLength(1);
        flaky.mend();
        const refused = await b.jobs.redrive(job.id).then(
          () => undefined,
          (error: unknown) => error,
        );
        expect(refused).toBeInstanceOf(Error);
        expect(String((refused as Error).message)).toMatch(
          /its tasks not published \(publish refused\); the deaths of tasks 0 are stored again/,
        );
        expect(refusals).toBe(1);
        // Its death stored again after the marker that took it back, the task's last word.
        expect(lastSaid(await side.storedResults(queue, job.id), 0)).toBe("dead");
        copy.open();
        second.open();
        // Task 0 counted dead again: the job ends failed, not stalled waiting for it.
        expect(await job.done()).toMatchObject({ status: "failed", done: 1, failed: 0, dead: 1 });
        expect(await side.stored(job.id)).toMatchObject({
          status: "failed",
          counts: { done: 1, failed: 0, dead: 1 },
        });
        // The stored copy ran (its answer after the death stored again: a duplicate).
        if (stored)
          await waitUntil(() => runsOf(0).includes("ok"), {
            timeoutMs: 15_000,
            message: "the stored copy ran",
          });
        expect(runsOf(0)).toEqual(stored ? ["threw", "ok"] : ["threw"]);
        expect((await b.jobs.deadLetters(job.id)).map((l) => l.index)).toEqual([0]);
        // The redrive made again sends the task; the job counts its answer.
        const again = await b.jobs.redrive(job.id);
        expect(await again.done()).toMatchObject({ status: "succeeded", done: 2, failed: 0, dead: 0 });
        expect(await side.stored(job.id)).toMatchObject({
          status: "succeeded",
          counts: { done: 2, failed: 0, dead: 0 },
        });
        expect(runsOf(0)).toEqual(stored ? ["threw", "ok", "ok"] : ["threw", "ok"]);
        expect(runsOf(1)).toEqual(["ok"]);
        expect(await b.jobs.deadLetters(job.id)).toEqual([]);
      } finally {
        copy.open();
        second.open();
        await worker.stop();
        await b.stop();
        await a.stop();
        await side.dispose();
      }
    },
  );

  it.each([
    ["", false],
    [", its first publish refused too (the deaths stored again after the end)", true],
  ] as const)(
    "its process gone between marker and copy: the job stalls out, and a redrive reopens it%s",
    {
      timeout: 60_000,
    },
    async (_how, refuseResume) => {
      const side = await makeSide();
      // A's first redrive publish refused: the record put back over, the death stored again.
      let refusals = 0;
      const refuseFirstCopy = (inner: Broker) =>
        spiedBroker(inner, (name, _n, args, call) => {
          if (!refuseResume || name !== "publishTasks" || !(args[0] as JobRecord).submitId.startsWith("r"))
            return call();
          if (refusals++ > 0) return call();
          return Promise.reject(new Error("publish refused"));
        }).broker;
      // B's process is gone once its redrive reaches the copy's publish: nothing of B runs after
      // (its putting back, its deaths stored again): every call of its broker fails from then on.
      let gone = false;
      const dieAtCopy = (inner: Broker) =>
        spiedBroker(inner, (name, _n, args, call) => {
          if (name === "publishTasks" && (args[0] as JobRecord).submitId.startsWith("r")) gone = true;
          return gone ? Promise.reject(new Error("process gone")) : call();
        }).broker;
      const a = await side.runtime("a", refuseFirstCopy);
      const b = await side.runtime("b", dieAtCopy, false);
      const queue = refuseResume ? "copy-never-twice" : "copy-never";
      const second = gate();
      const flaky = flakyWorker(a, queue, { before: (i) => (i === 1 ? second.opened : Promise.resolve()) });
      const runsOf = (index: number) => flaky.ran.filter(([i]) => i === index).map(([, r]) => r);
      const worker = flaky.start();
      try {
        const job = await submitDying(a, queue, { stallAfterMs: 1_000, stalledTimeoutMs: 2_000 });
        await waitUntil(async () => lastSaid(await side.storedResults(queue, job.id), 0) === "dead", {
          timeoutMs: 15_000,
          message: "task 0's death stored",
        });
        flaky.mend();
        await expect(b.jobs.redrive(job.id)).rejects.toThrow();
        expect(gone).toBe(true);
        second.open();
        // Task 0's death taken back, nothing sent: the job stalls out with it never answered.
        expect(await job.done()).toMatchObject({ status: "failed", done: 1, failed: 0, dead: 0 });
        expect(await side.stored(job.id)).toMatchObject({
          status: "failed",
          counts: { done: 1, failed: 0, dead: 0 },
        });
        expect(runsOf(0)).toEqual(["threw"]);
        expect((await a.jobs.deadLetters(job.id)).map((l) => l.index)).toEqual([0]);
        if (refuseResume) {
          // Reopened, its publish refused: put back over, task 0's death stored again (a new letter).
          await expect(a.jobs.redrive(job.id)).rejects.toThrow(/the deaths of tasks 0 are stored again/);
          expect(refusals).toBe(1);
          expect(await side.stored(job.id)).toMatchObject({
            status: "failed",
            counts: { done: 1, failed: 0, dead: 0 },
          });
          expect(lastSaid(await side.storedResults(queue, job.id), 0)).toBe("dead");
          expect((await a.jobs.deadLetters(job.id)).map((l) => l.index)).toEqual([0]);
        }
        // The same redrive made again from a runtime alive (after a refusal, another: a new
        // letter): the job reopened, the task runs.
        const again = await a.jobs.redrive(job.id);
        expect(await again.done()).toMatchObject({ status: "succeeded", done: 2, failed: 0, dead: 0 });
        expect(await side.stored(job.id)).toMatchObject({
          status: "succeeded",
          counts: { done: 2, failed: 0, dead: 0 },
        });
        expect(runsOf(0)).toEqual(["threw", "ok"]);
        expect(runsOf(1)).toEqual(["ok"]);
        expect(await a.jobs.deadLetters(job.id)).toEqual([]);
      } finally {
        second.open();
        await worker.stop();
        // Its broker answers again for its stop (which would fail otherwise), the test over.
        gone = false;
        await b.stop();
        await a.stop();
        await side.dispose();
      }
    },
  );
});
