/**
 * A redrive made after a job's supervisor decided its end, before that end
 * was written: the redrive reads the job running, sends its dead task back
 * and reopens the record (its dead count lowered); then the supervisor's end
 * meets that record. Written, it said `failed` with the task dead, while the
 * task ran again and no dead letter was left to redrive: the redrive was
 * lost. The end must not be written: the supervisor counts the redrive's
 * marker and the task's new answer, and the job ends as they say. Runtime A
 * supervises (its end's write is held until the redrive is done); runtime B
 * runs the worker and redrives. The oracles: the record read from the
 * server's store, the dead letters, the handler's ledger, and what A's own
 * handle (the first one) and B's resolve with.
 *
 * Again after a marker an earlier version wrote (0.2's, naming no redrive)
 * was counted: the supervisor counted it as any redrive, and no end was
 * ever refused again for that job.
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
import { gate, waitUntil, within } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a redrive made between a job's end decided and its end written, on %s", (_kind, makeSide) => {
  it.each([
    ["", false],
    [", after an earlier version's marker was counted", true],
  ])(
    "is not lost: the end is decided again, from the redriven task's answer%s",
    {
      timeout: 40_000,
    },
    async (_case, earlierMarker) => {
      const side = await makeSide();
      const release = gate();
      let held: Promise<unknown> | undefined;
      /** A's end as it tried to write it (the first, held). */
      let decided: JobRecord | undefined;
      const holdEnd = (inner: Broker) =>
        spiedBroker(inner, (name, _n, args, call) => {
          if (name !== "updateRecord" || held) return call();
          const record = args[0] as JobRecord;
          // Progress is never written `failed`: this is the end, decided with task 0 dead.
          if (record.status !== "failed") return call();
          decided = record;
          held = release.opened.then(call);
          return held;
        }).broker;
      const a = await side.runtime("a", holdEnd);
      let bBroker: Broker | undefined;
      const b = await side.runtime("b", (inner) => {
        bBroker = inner;
        return inner;
      });
      const flaky = flakyWorker(b, "race", { concurrency: 2 });
      const job = await submitDying(a, "race");
      // As 0.2 wrote it (no "id"), for task 1 before it has an answer: nothing to forget, but counted.
      if (earlierMarker)
        await bBroker!.publishResults("race", job.id, '[{"i":1,"redrive":true}]', "redrive-0.2");
      const worker = flaky.start();
      try {
        await waitUntil(() => held !== undefined, {
          timeoutMs: 15_000,
          message: "A's end (failed, task 0 dead) decided, its write held",
        });
        expect(decided).toMatchObject({ status: "failed", counts: { done: 1, failed: 0, dead: 1 } });
        await waitUntil(async () => (await b.jobs.deadLetters(job.id)).length === 1, {
          timeoutMs: 15_000,
          message: "task 0's dead letter stored",
        });
        // The redrive reads the job running (A's end is not written) and reopens it.
        flaky.mend();
        const again = await b.jobs.redrive(job.id);
        expect(await side.stored(job.id)).toMatchObject({ status: "running", counts: { dead: 0 } });
        release.open();
        const first = await within(job.done(), 15_000);
        expect(first, "A's handle resolved").not.toBe("never");
        const second = await within(again.done(), 15_000);
        expect(second, "B's handle resolved").not.toBe("never");
        // Before the fix: { status: "failed", counts: { done: 1, failed: 0, dead: 1 } }, task 0 ran
        // again and succeeded, and no dead letter was left to redrive.
        await expectRedriveSucceeded(side, b.jobs, job.id, flaky);
        expect(flaky.ran.filter(([i]) => i === 1)).toEqual([[1, "ok"]]);
        // The first handle resolves with the job's end as written, not the end it had decided.
        expect(first).toMatchObject({ status: "succeeded", done: 2, failed: 0, dead: 0, reason: null });
        expect(second).toMatchObject({ status: "succeeded", done: 2, failed: 0, dead: 0 });
      } finally {
        release.open();
        await worker.stop();
        await b.stop();
        await a.stop();
        await side.dispose();
      }
    },
  );
});
