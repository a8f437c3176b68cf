/**
 * A redrive of a running job while its supervisor's progress write, planned
 * while the redriven task was still dead, is on its way: it lands after the
 * redrive lowered the record's dead count (its compare-and-set meets the
 * redrive's write and is tried again on a fresh read). Tried with the counts
 * it was planned from, it wrote the task dead again, per field the larger,
 * for good: the job ended succeeded with one task dead, no dead letter, and
 * more answers than tasks. Two cases: the supervisor has counted the
 * redrive's marker and the task's new answer by the try (it must write
 * those), or its results feed is still behind the marker (the try writes
 * the task dead, the write that follows the marker must take it off).
 * Runtime A supervises (that write waits for the redrive; its feed is held
 * from the marker on in the second case); runtime B redrives and runs the
 * worker. The oracles: the record read from the server's store, A's record
 * writes, the dead letters, the handler's ledger.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a progress write planned before a redrive, landing after it, on %s", (_kind, makeSide) => {
  it.each([
    ["its feed has counted the redrive", false],
    ["its feed is behind the redrive", true],
  ] as const)(
    "leaves the redriven task off the dead count: %s",
    { timeout: 40_000 },
    async (_case, feedBehind) => {
      const side = await makeSide();
      const release = gate();
      let armed = false;
      let held: Promise<unknown> | undefined;
      /** A's feed from the redrive's marker on, not handed over yet. */
      let behind: Array<() => void> | undefined;
      /** A's record writes once it counts the redrive and task 0's new answer. */
      const written: JobRecord[] = [];
      let counted = false;
      const holdStaleWrite = (inner: Broker) =>
        spiedBroker(inner, (name, _n, args, call) => {
          if (name === "followResults") {
            const onMessage = args[2] as (body: string, pending: number) => void;
            args[2] = (body: string, pending: number) => {
              if (feedBehind && armed && !behind && body.includes('"redrive":true')) behind = [];
              if (behind) behind.push(() => onMessage(body, pending));
              else onMessage(body, pending);
            };
            return call();
          }
          if (name !== "updateRecord") return call();
          const record = args[0] as JobRecord;
          if (counted) written.push(record);
          // A's first progress write with task 1 done and task 0 still dead waits for the redrive.
          if (!armed || held || record.status !== "running") return call();
          if (record.counts.done !== 1 || record.counts.dead !== 1) return call();
          held = release.opened.then(call);
          return held;
        }).broker;
      const handOver = () => {
        armed = false;
        for (const deliver of behind?.splice(0) ?? []) deliver();
        behind = undefined;
      };
      const a = await side.runtime("a", holdStaleWrite);
      const b = await side.runtime("b");
      const second = gate();
      const third = gate();
      const flaky = flakyWorker(b, "race", {
        concurrency: 3,
        before: async (index) => {
          if (index === 1) await second.opened;
          if (index === 2) await third.opened;
        },
      });
      const worker = flaky.start();
      try {
        const job = await submitDying(a, "race", { tasks: [1, 2, 3] });
        await waitUntil(async () => (await side.stored(job.id))?.counts.dead === 1, {
          timeoutMs: 15_000,
          message: "task 0 recorded dead",
        });
        armed = true;
        second.open();
        await waitUntil(() => held !== undefined, {
          timeoutMs: 15_000,
          message: "A's write of task 1's answer (task 0 dead) held",
        });
        flaky.mend();
        await b.jobs.redrive(job.id);
        expect((await side.stored(job.id))?.counts.dead).toBe(0);
        await waitUntil(() => flaky.ran.length === 3, { timeoutMs: 15_000, message: "task 0 ran again" });
        if (!feedBehind) {
          await waitUntil(() => job.snapshot().done === 2 && job.snapshot().dead === 0, {
            timeoutMs: 15_000,
            message: "A counts the redrive and task 0's new answer",
          });
          counted = true;
          // The write goes on: a conflict, a read, and what A counts by then (written, or already).
          release.open();
          await held?.catch(() => undefined);
          await waitUntil(async () => (await side.stored(job.id))?.counts.done === 2, {
            timeoutMs: 15_000,
            message: "A's progress written",
          });
        } else {
          // The write goes on, A's feed behind the marker: it writes task 0 dead again.
          release.open();
          await waitUntil(async () => (await side.stored(job.id))?.counts.done === 1, {
            timeoutMs: 15_000,
            message: "A's write of task 1's answer landed after the redrive",
          });
          handOver();
          await waitUntil(() => job.snapshot().done === 2 && job.snapshot().dead === 0, {
            timeoutMs: 15_000,
            message: "A counts the redrive and task 0's new answer",
          });
          // Before the fix the record kept task 0 dead: { done: 2, failed: 0, dead: 1 }.
          await waitUntil(async () => (await side.stored(job.id))?.counts.dead === 0, {
            timeoutMs: 5_000,
            message: "A's next write takes task 0 off the dead count",
          });
        }
        expect((await side.stored(job.id))?.counts).toEqual({ done: 2, failed: 0, dead: 0 });
        third.open();
        const end = await job.done();
        expect(end).toMatchObject({ status: "succeeded", done: 3, failed: 0, dead: 0 });
        expect(await side.stored(job.id)).toMatchObject({
          status: "succeeded",
          counts: { done: 3, failed: 0, dead: 0 },
        });
        // Its feed caught up, A never wrote task 0 dead after the redrive (the try after the
        // conflict wrote it from the counts planned).
        if (!feedBehind) expect(written.filter((r) => r.counts.dead > 0)).toEqual([]);
        expect(await b.jobs.deadLetters(job.id)).toEqual([]);
        expect(flaky.ran.filter(([i]) => i === 0)).toEqual([
          [0, "threw"],
          [0, "ok"],
        ]);
      } finally {
        release.open();
        second.open();
        third.open();
        handOver();
        await worker.stop();
        await b.stop();
        await a.stop();
        await side.dispose();
      }
    },
  );
});
