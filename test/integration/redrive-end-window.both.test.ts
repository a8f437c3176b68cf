/**
 * A job with a consumer of its own, whose supervisor decided its end (a task
 * dead) before a redrive and writes it while the redrive is under way: the
 * end reads its tasks stream's mark, writes the end, then purges what is
 * stored below the mark and deletes the consumer. A redrive that published
 * its task before reopening the record left that window open: an end whose
 * mark was read after the redriven task was stored, written before the
 * redrive's record write, purged the task and deleted the consumer; the
 * redrive then reopened the job (dead lowered, its letter removed), which
 * had nothing left to run. The redriven task must outlive that end, run,
 * and the job succeed. Runtime A supervises: its end's mark read is held
 * until the redrive has published its task or written its record, whichever
 * comes first ("task"), or until it has published its marker ("marker": the
 * end written before the redrive's record write, which reopens the ended
 * job; "refused": the same, the redrive's first publish of its task then
 * refused, which must put the record back as A's end wrote it, not as the
 * redrive read it). Runtime B redrives (its steps after that point are held
 * until A's clean-up is done) and runs the worker, stopped while the redrive
 * is made, so the redriven task waits stored, as behind a backlog. The
 * oracles: the record read from the server's store, the server's count of
 * the job's stored tasks, the dead letters, the handler's ledger, and what
 * both handles resolve with.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobRecord, JobTasksRef } from "../../src/kernel/job-record.ts";
import {
  expectRedriveSucceeded,
  flakyWorker,
  memorySide,
  natsSide,
  submitDying,
} from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

/** Whether a promise settled, and how. */
const settled = (promise: Promise<unknown>) => {
  const state: { done?: "resolved" | "rejected" } = {};
  promise.then(
    () => {
      state.done = "resolved";
    },
    () => {
      state.done = "rejected";
    },
  );
  return state;
};

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("an end written while a redrive of its job is under way, on %s", (_kind, makeSide) => {
  it.each([
    ["after the redrive's task", "task"],
    ["after the redrive's marker", "marker"],
    ["after the redrive's marker, its task's publish refused once", "refused"],
  ] as const)(
    "%s: the redriven task runs, and the job succeeds",
    { timeout: 40_000 },
    async (_when, after) => {
      const side = await makeSide();
      let jobId = "";
      /** B's redrive: its task published, or its record written (whichever first opens A's mark read). */
      const redriveOn = gate();
      let tasksPublished = false;
      let markerPublished = false;
      /** "refused": the marker's case, the redrive's first publish of its task refused. */
      const marked = after !== "task";
      let refused = false;
      /** A's end as written. */
      let ended: JobRecord | undefined;
      /** A's end, its mark read held until `redriveOn`. */
      let markHeld: Promise<unknown> | undefined;
      /** A's end write (the first `failed` record A writes), and A's clean-up. */
      let endWrite: { done?: "resolved" | "rejected" } | undefined;
      let cleanup: Promise<unknown> | undefined;
      const cleanupDone = gate();
      const spyA = (inner: Broker) =>
        spiedBroker(inner, (name, _n, args, call) => {
          if (name === "tasksMark" && !markHeld && (args[0] as JobTasksRef).queue === "race") {
            markHeld = redriveOn.opened.then(call);
            return markHeld;
          }
          if (name === "updateRecord" && !endWrite && (args[0] as JobRecord).status === "failed") {
            ended = args[0] as JobRecord;
            const write = call() as Promise<unknown>;
            endWrite = settled(write);
            return write;
          }
          if (name === "removeTasks" && !cleanup && (args[0] as JobTasksRef).queue === "race") {
            cleanup = (call() as Promise<unknown>).finally(cleanupDone.open);
            return cleanup;
          }
          return call();
        }).broker;
      const spyB = (inner: Broker) =>
        spiedBroker(inner, (name, _n, args, call) => {
          const record = (args[0] ?? {}) as JobRecord;
          const ours = record.id === jobId || args[1] === jobId;
          const marker = name === "publishResults" && ours && String(args[3]).startsWith("redrive.");
          const tasks = name === "publishTasks" && ours && record.submitId.startsWith("r");
          const reopen = name === "updateRecord" && ours && record.redrive !== undefined;
          if (marked && marker)
            return (call() as Promise<unknown>).finally(() => {
              markerPublished = true;
              redriveOn.open();
            });
          if (after === "refused" && tasks && !refused) {
            refused = true;
            return cleanupDone.opened.then(() => Promise.reject(new Error("publish refused")));
          }
          // Past the point A's end was let in: A's end goes in between, and is cleaned up first.
          if ((tasks || reopen) && (tasksPublished || markerPublished)) return cleanupDone.opened.then(call);
          if (after === "task" && tasks)
            return (call() as Promise<unknown>).finally(() => {
              tasksPublished = true;
              redriveOn.open();
            });
          if (after === "task" && reopen) return (call() as Promise<unknown>).finally(redriveOn.open);
          return call();
        }).broker;
      const a = await side.runtime("a", spyA);
      const b = await side.runtime("b", spyB);
      const flaky = flakyWorker(b, "race", { concurrency: 2 });
      let worker = flaky.start();
      try {
        const job = await submitDying(a, "race");
        jobId = job.id;
        await waitUntil(() => markHeld !== undefined, {
          timeoutMs: 15_000,
          message: "A's end decided (task 0 dead), its mark read held",
        });
        await waitUntil(async () => (await b.jobs.deadLetters(job.id)).length === 1, {
          timeoutMs: 15_000,
          message: "task 0's dead letter stored",
        });
        await worker.stop();
        flaky.mend();
        // B reads the job running (A's end not written) and sends task 0 back.
        if (after === "refused") {
          await expect(b.jobs.redrive(job.id)).rejects.toThrow("publish refused");
          // Put back as A's end wrote it (put back as the redrive had read it, the job said
          // running with nothing to run): over, its task dead and redrivable.
          expect(await side.stored(job.id)).toMatchObject({
            status: "failed",
            counts: { done: 1, failed: 0, dead: 1 },
            finishedAt: ended?.finishedAt,
          });
          expect(await b.jobs.deadLetters(job.id)).toHaveLength(1);
        }
        const again = await b.jobs.redrive(job.id);
        await waitUntil(() => endWrite?.done !== undefined, {
          timeoutMs: 15_000,
          message: "A's end write tried",
        });
        // Written, the end is cleaned up: its purge and its consumer's delete are waited for.
        if (endWrite?.done === "resolved")
          await waitUntil(() => cleanup !== undefined, { timeoutMs: 15_000, message: "A's clean-up" });
        await cleanup?.catch(() => undefined);
        // Before the fix, after the task: 0 (purged by A's clean-up, its mark read past it), the
        // record reopened, and the job then ran on with nothing to run.
        expect(await side.storedTasks("race", job.id)).toBe(1);
        worker = flaky.start();
        const second = await within(again.done(), 15_000);
        expect(second, "B's handle resolved").not.toBe("never");
        const first = await within(job.done(), 15_000);
        expect(first, "A's handle resolved").not.toBe("never");
        await expectRedriveSucceeded(side, b.jobs, job.id, flaky);
        expect(flaky.ran.filter(([i]) => i === 1)).toEqual([[1, "ok"]]);
        expect(second).toMatchObject({ status: "succeeded", done: 2, failed: 0, dead: 0 });
        // A's end written before the redrive's record write is its handle's end; one refused, the
        // job's.
        expect(first).toMatchObject(
          marked
            ? { status: "failed", done: 1, failed: 0, dead: 1 }
            : { status: "succeeded", done: 2, failed: 0, dead: 0 },
        );
      } finally {
        redriveOn.open();
        cleanupDone.open();
        await worker.stop();
        await b.stop();
        await a.stop();
        await side.dispose();
      }
    },
  );
});
