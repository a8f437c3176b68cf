/**
 * Handlers longer than half a task's lease, or longer than all of it,
 * with a backlog: a task the worker pulled waits for a free slot (or
 * buffered in the client behind one that does) while its lease runs. Its
 * lease is kept, so it is never given to another worker meanwhile and run
 * twice, and no delivery is spent on it unrun (with `maxDeliver: 1` it
 * died), unless it waited a whole lease for a slot: then it goes back, for
 * a worker with room (the last case). Seen before, with a 1 s ack wait and
 * two slots: 700 ms handlers ran 4 tasks of 20 twice (once on their first
 * delivery, late, once on their second) and 2 more only on their second;
 * with `maxDeliver: 1`, 2 died unrun; 1500 ms handlers (with the buffer
 * still dropped), 5 of 20 died.
 *
 * The oracle is the handlers' own ledger: each task's runs.
 */
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { Runtime } from "../../src/index.ts";
import { useRuntimeOn } from "../harness/runtime.ts";
import { delay, waitUntil } from "../harness/wait.ts";

describe.each(["memory", "nats"] as const)("handlers longer than half a lease (%s)", (kind) => {
  let rt: Runtime;
  useRuntimeOn(kind, { logger: pino({ level: process.env.LOG_LEVEL ?? "silent" }) }, async (started) => {
    rt = started;
    await rt.admin.provision(["long"]);
  });

  it.each([
    { handlerMs: 700, tasks: 16, maxDeliver: 5, what: "longer than half the lease" },
    { handlerMs: 1500, tasks: 8, maxDeliver: 1, what: "longer than the lease, one delivery each" },
  ])(
    "handlers $what: each task runs once, on its first delivery, none dead",
    async (c) => {
      const runs = new Map<number, number[]>();
      const job = await rt.jobs.submit<number, number>({
        queue: "long",
        tasks: Array.from({ length: c.tasks }, (_, n) => n),
        ackWaitMs: 1000,
        maxDeliver: c.maxDeliver,
      });
      const worker = rt.workers.start<number, number>({
        queue: "long",
        concurrency: 2,
        handler: async (task) => {
          runs.set(task.index, [...(runs.get(task.index) ?? []), task.attempt]);
          await delay(c.handlerMs);
          return task.index;
        },
      });
      try {
        const end = await Promise.race([job.done(), delay(40_000).then(() => undefined)]);
        expect(end).toMatchObject({ status: "succeeded", done: c.tasks, failed: 0, dead: 0 });
        expect([...runs].filter(([, attempts]) => attempts.length !== 1 || attempts[0] !== 1)).toEqual([]);
      } finally {
        await worker.stop();
      }
    },
    60_000,
  );

  it("a task kept waiting a whole lease for a slot goes back, and an idle worker runs it", async () => {
    const runs = new Map<number, string[]>();
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const job = await rt.jobs.submit<number, number>({
      queue: "long",
      tasks: Array.from({ length: 4 }, (_, n) => n),
      ackWaitMs: 1000,
    });
    const busy = rt.workers.start<number, number>({
      queue: "long",
      concurrency: 1,
      handler: async (task) => {
        runs.set(task.index, [...(runs.get(task.index) ?? []), "busy"]);
        // Its first task holds its one slot until the test lets it go.
        if (runs.size === 1) await held;
        return task.index;
      },
    });
    await waitUntil(() => runs.size === 1, { timeoutMs: 10_000, message: "the busy worker runs a task" });
    const idle = rt.workers.start<number, number>({
      queue: "long",
      concurrency: 4,
      handler: async (task) => {
        runs.set(task.index, [...(runs.get(task.index) ?? []), "idle"]);
        return task.index;
      },
    });
    try {
      // Without the bound the busy worker kept the tasks it pulled until its slot came free.
      await waitUntil(() => runs.size === 4, { timeoutMs: 10_000, message: "the idle worker runs the rest" });
      release();
      const end = await Promise.race([job.done(), delay(20_000).then(() => undefined)]);
      expect(end).toMatchObject({ status: "succeeded", done: 4, failed: 0, dead: 0 });
      expect([...runs].filter(([, by]) => by.length !== 1)).toEqual([]);
    } finally {
      release();
      await idle.stop();
      await busy.stop();
    }
  }, 60_000);
});
