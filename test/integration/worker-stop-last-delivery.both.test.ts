/**
 * A worker stopped while it holds tasks on their last delivery (a job with
 * `maxDeliver: 1`, run at most once, during a rolling deploy): the tasks it
 * pulled and had not started are run before it stops, not handed back. A
 * hand-back is a delivery spent: on the last one the server never delivers
 * the task again, and it died unrun, counted dead. Seen before the fix:
 * every stop of a busy worker killed the tasks it had buffered.
 *
 * The oracle is the handlers' own ledger (each task's runs), and the job's
 * end read from its record.
 */
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { Runtime } from "../../src/index.ts";
import { useRuntimeOn } from "../harness/runtime.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const TASKS = 60;

describe.each(["memory", "nats"] as const)(
  "a worker stopped with tasks on their last delivery (%s)",
  (kind) => {
    let rt: Runtime;
    useRuntimeOn(kind, { logger: pino({ level: process.env.LOG_LEVEL ?? "silent" }) }, async (started) => {
      rt = started;
      await rt.admin.provision(["once", "rated"]);
      await rt.queues.configure("rated", { ratePerSecond: 5 });
    });

    it("runs them before it stops: none dies unrun", async () => {
      /** Each run: task index → the workers that ran it. */
      const runs = new Map<number, string[]>();
      let first = 0;
      let inFlight = 0;
      let most = 0;
      const handler = (name: string) => async (task: { index: number }) => {
        if (name === "first") first++;
        most = Math.max(most, ++inFlight);
        await delay(20);
        inFlight--;
        runs.set(task.index, [...(runs.get(task.index) ?? []), name]);
        return task.index;
      };
      const job = await rt.jobs.submit<number, number>({
        queue: "once",
        tasks: Array.from({ length: TASKS }, (_, n) => n),
        maxDeliver: 1,
      });
      const worker = rt.workers.start<number, number>({
        queue: "once",
        concurrency: 4,
        handler: handler("first"),
      });
      await waitUntil(() => runs.size >= 8, { timeoutMs: 15_000, message: "8 tasks ran" });
      await worker.stop();
      // Everything the stopped worker started has ended by now, never more at once than its concurrency.
      expect(runs.size).toBe(first);
      expect(most).toBeLessThanOrEqual(4);
      const last = rt.workers.start<number, number>({
        queue: "once",
        concurrency: 4,
        handler: handler("last"),
      });
      try {
        const end = await Promise.race([job.done(), delay(20_000).then(() => undefined)]);
        const unrun = Array.from({ length: TASKS }, (_, n) => n).filter((n) => !runs.has(n));
        expect(end?.status, `not run: ${unrun.join(",")}`).toBe("succeeded");
        expect(unrun).toEqual([]);
        expect([...runs.values()].filter((r) => r.length !== 1)).toEqual([]);
        expect(end).toMatchObject({ done: TASKS, failed: 0, dead: 0 });
      } finally {
        await last.stop();
      }
    }, 60_000);

    it("waits for them when nothing runs as it stops (a rate-limited queue): stop() returns after they ran", async () => {
      const runs = new Map<number, string[]>();
      let started = 0;
      const job = await rt.jobs.submit<number, number>({
        queue: "rated",
        tasks: Array.from({ length: 12 }, (_, n) => n),
        maxDeliver: 1,
      });
      const worker = rt.workers.start<number, number>({
        queue: "rated",
        concurrency: 4,
        handler: async (task) => {
          started++;
          runs.set(task.index, [...(runs.get(task.index) ?? []), "first"]);
          return task.index;
        },
      });
      // Tasks wait for the rate's permits, not in handlers: nothing runs at the stop.
      await waitUntil(() => runs.size >= 2, { timeoutMs: 15_000, message: "2 tasks ran" });
      await worker.stop();
      const atStop = started;
      await delay(1_500);
      // No handler started after stop() returned.
      expect(started).toBe(atStop);
      const last = rt.workers.start<number, number>({
        queue: "rated",
        concurrency: 4,
        handler: async (task) => {
          runs.set(task.index, [...(runs.get(task.index) ?? []), "last"]);
          return task.index;
        },
      });
      try {
        const end = await Promise.race([job.done(), delay(20_000).then(() => undefined)]);
        expect(end).toMatchObject({ status: "succeeded", done: 12, failed: 0, dead: 0 });
        expect([...runs.values()].filter((r) => r.length !== 1)).toEqual([]);
      } finally {
        await last.stop();
      }
    }, 60_000);

    it("keeps their leases while they wait for a slot longer than the ack wait: each runs once, none dead", async () => {
      const runs = new Map<number, number>();
      let holding = true;
      let blocked = 0;
      const job = await rt.jobs.submit<number, number>({
        queue: "once",
        tasks: Array.from({ length: 6 }, (_, n) => n),
        maxDeliver: 1,
        ackWaitMs: 1000,
      });
      const worker = rt.workers.start<number, number>({
        queue: "once",
        concurrency: 2,
        handler: async (task) => {
          runs.set(task.index, (runs.get(task.index) ?? 0) + 1);
          blocked++;
          // The first two hold both slots until the test lets them go.
          while (holding && blocked <= 2) await delay(20);
          return task.index;
        },
      });
      await waitUntil(() => blocked >= 2, { timeoutMs: 15_000, message: "two handlers run" });
      const stopped = worker.stop();
      // Another worker pulls meanwhile: a lease that runs out goes to it, past its last delivery
      // (the server counts the task dead), unless the stopping worker keeps it.
      const other = rt.workers.start<number, number>({
        queue: "once",
        concurrency: 1,
        handler: async (task) => {
          runs.set(task.index, (runs.get(task.index) ?? 0) + 1);
          return task.index;
        },
      });
      try {
        // Three times the ack wait.
        await delay(3_000);
        const heldByTheStoppingWorker = 6 - runs.size;
        holding = false;
        await stopped;
        const end = await Promise.race([job.done(), delay(20_000).then(() => undefined)]);
        // The stopping worker held tasks past the ack wait, beside the two running.
        expect(heldByTheStoppingWorker).toBeGreaterThan(0);
        expect(end).toMatchObject({ status: "succeeded", done: 6, failed: 0, dead: 0 });
        expect([...runs].filter(([, n]) => n !== 1)).toEqual([]);
      } finally {
        await other.stop();
      }
    }, 60_000);
  },
);
