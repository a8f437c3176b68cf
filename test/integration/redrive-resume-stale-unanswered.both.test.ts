/**
 * A redrive (R) of a job over with a task never answered, task 0, whose letter
 * it sends: it reads the job's results (`unansweredTasks`: task 0 only) and is
 * allowed to reopen it. Before R's record write, another redrive (R2, of
 * tasks 0 and 1) reopens the job, and the user cancels it: it ends again,
 * `cancelled: enough`, with tasks 0 and 1 never answered (R2's marker took
 * task 1's death back, its copies purged by the cancel, its letters removed).
 * R's write must be refused as the code says ("Ended since it was read (a
 * cancel from another process): the same refusal"): task 1 has no letter
 * and R does not send it, so the job reopened would wait for it for good.
 * It is not: the write's check asks whether every task of the set R read
 * before (task 0) is one R sends, not those the record now leaves
 * unanswered, and the cancelled job is reopened, running, the cancel's
 * reason dropped, with task 1 never to run.
 *
 * The first end: all three tasks die; a redrive of task 0 (B) whose process
 * is gone from its copy's publish on takes task 0's death back and sends
 * nothing, and the job stalls out with task 0 never answered, its letter
 * there (redrive-copy-unpublished.both.test.ts, third case). Oracles: the
 * record as the server stores it.
 *
 * The same with R2's job stalling out again instead of a cancel (nothing
 * runs its copies): the job is over with tasks 0 and 1 never answered, task
 * 1's letter removed, and R's write must be refused all the same: the end it
 * writes over is not the one it read.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { flakyWorker, holdMarkers, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)(
  "a redrive reopening a job over, the job reopened and cancelled meanwhile, on %s",
  (_kind, makeSide) => {
    it.each([
      ["cancelled", "cancel"],
      ["stalled out", "stall"],
    ] as const)("is refused in its write, and the job stays %s", { timeout: 60_000 }, async (_end, how) => {
      const side = await makeSide();
      // B's process is gone once its redrive reaches the copy's publish.
      let gone = false;
      const dieAtCopy = (inner: Broker) =>
        spiedBroker(inner, (name, _n, args, call) => {
          if (name === "publishTasks" && (args[0] as JobRecord).submitId.startsWith("r")) gone = true;
          return gone ? Promise.reject(new Error("process gone")) : call();
        }).broker;
      const hold = holdMarkers();
      const a = await side.runtime("a");
      const b = await side.runtime("b", dieAtCopy, false);
      const r = await side.runtime("r", hold.wrap, false);
      const queue = "resume_stale";
      const flaky = flakyWorker(a, queue, { dying: "every" });
      const worker = flaky.start();
      try {
        const job = await submitDying(a, queue, {
          tasks: [1, 2, 3],
          stallAfterMs: 1_000,
          stalledTimeoutMs: 2_000,
        });
        expect(await job.done()).toMatchObject({ status: "failed", dead: 3 });
        // Nothing runs from here on: the copies wait stored.
        await worker.stop();
        await expect(b.jobs.redrive(job.id, [0])).rejects.toThrow();
        expect(gone).toBe(true);
        // Task 0's death taken back, nothing sent: the job stalls out with it never answered.
        const stalled = await a.jobs.get(job.id);
        expect(await stalled?.done()).toMatchObject({ status: "failed", done: 0, dead: 2 });
        expect((await a.jobs.deadLetters(job.id)).map((l) => l.index)).toEqual([0, 1, 2]);
        // R reads the job (task 0 the only one never answered) and is held at its marker.
        const redriveR = r.jobs.redrive(job.id, [0]).then(
          () => "resolved",
          (error: unknown) => error,
        );
        await hold.reached.opened;
        // R2 reopens the job with tasks 0 and 1; the user cancels it, or it stalls out again.
        const reopened = await a.jobs.redrive(job.id, [0, 1]);
        if (how === "cancel") await reopened.cancel("enough");
        else expect(await reopened.done()).toMatchObject({ status: "failed", done: 0, dead: 1 });
        const ended = await side.stored(job.id);
        expect(ended).toMatchObject({ status: "failed", counts: { done: 0, dead: 1 } });
        if (how === "cancel") expect(ended).toMatchObject({ reason: "cancelled: enough" });
        expect((await a.jobs.deadLetters(job.id)).map((l) => l.index)).toEqual([2]);
        hold.held.open();
        const outcome = await redriveR;
        expect(await side.stored(job.id)).toMatchObject({
          status: "failed",
          reason: ended?.reason,
          finishedAt: ended?.finishedAt,
          counts: { done: 0, dead: 1 },
        });
        expect(outcome).toMatchObject({ _tag: "InvalidArgument", field: "id" });
      } finally {
        hold.held.open();
        await worker.stop();
        gone = false;
        await r.stop();
        await b.stop();
        await a.stop();
        await side.dispose();
      }
    });
  },
);
