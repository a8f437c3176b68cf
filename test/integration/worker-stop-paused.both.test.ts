/**
 * A worker stopped while its queue is paused, holding tasks on their last
 * delivery (a `maxDeliver: 1` job: an operator pauses the queue, then
 * deploys). A paused queue runs nothing, and a release would spend the
 * task's last delivery: it died unrun, counted dead. The worker puts such a
 * task back instead (a copy, delivered from 1 again), so it runs once the
 * queue is resumed. Seen before the fix: every task the worker held died.
 *
 * The oracle is the handlers' own ledger (each task's runs) and the job's
 * end as its record says it.
 */
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { Runtime } from "../../src/index.ts";
import { useRuntimeOn } from "../harness/runtime.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const TASKS = 40;

describe.each(["memory", "nats"] as const)("a worker stopped while its queue is paused (%s)", (kind) => {
  let rt: Runtime;
  useRuntimeOn(kind, { logger: pino({ level: process.env.LOG_LEVEL ?? "silent" }) }, async (started) => {
    rt = started;
    await rt.admin.provision(["paused"]);
  });

  /** A `maxDeliver: 1` job: each task runs at most once. */
  const submitOnce = () =>
    rt.jobs.submit<number, number>({
      queue: "paused",
      tasks: Array.from({ length: TASKS }, (_, n) => n),
      maxDeliver: 1,
    });

  /** The queue resumed, another worker runs what is left (its runs go to `runs`); `check` sees the job's end. */
  const afterResume = async (
    job: Awaited<ReturnType<typeof submitOnce>>,
    runs: Map<number, string[]>,
    check: (end: Awaited<ReturnType<typeof job.done>> | undefined) => void,
  ) => {
    await rt.queues.resume("paused");
    const last = rt.workers.start<number, number>({
      queue: "paused",
      concurrency: 4,
      handler: async (task) => {
        runs.set(task.index, [...(runs.get(task.index) ?? []), "last"]);
        return task.index;
      },
    });
    try {
      const end = await within(job.done(), 20_000);
      check(end === "never" ? undefined : end);
    } finally {
      await last.stop();
    }
  };

  it("puts back the tasks it holds on their last delivery: each runs once after the resume, none dead", async () => {
    const runs = new Map<number, string[]>();
    const holding = gate();
    let blocked = 0;
    let returned = 0;
    const handler = async (task: { index: number }) => {
      runs.set(task.index, [...(runs.get(task.index) ?? []), "first"]);
      // The first two hold both slots until the pause is heard: no other starts before it.
      if (++blocked <= 2) await holding.opened;
      returned++;
      return task.index;
    };
    const job = await submitOnce();
    const first = rt.workers.start<number, number>({
      queue: "paused",
      concurrency: 2,
      handler,
    });
    await waitUntil(() => blocked >= 2, { timeoutMs: 15_000, message: "two handlers run" });
    await rt.queues.pause("paused");
    // The worker hears the pause through its watch of the queue's settings.
    await waitUntil(() => first.stats().paused, { timeoutMs: 10_000, message: "the pause heard" });
    holding.open();
    // Both slots free: the tasks it pulled meanwhile go to the paused gate, their leases kept.
    await waitUntil(() => returned === 2, { timeoutMs: 10_000, message: "the two held handlers returned" });
    const ranBeforeTheStop = runs.size;
    await first.stop();
    // It held tasks at the paused gate, and put them back (not vacuous: the pause was heard in time).
    const putBack = first.stats().released;
    await afterResume(job, runs, (end) => {
      const unrun = Array.from({ length: TASKS }, (_, n) => n).filter((n) => !runs.has(n));
      expect(ranBeforeTheStop).toBeLessThan(TASKS);
      expect(putBack).toBeGreaterThan(0);
      expect(end?.status, `not run: ${unrun.join(",")}`).toBe("succeeded");
      expect(end).toMatchObject({ done: TASKS, failed: 0, dead: 0 });
      expect([...runs.values()].filter((r) => r.length !== 1)).toEqual([]);
    });
  }, 60_000);

  it("hears a pause that comes while it stops: what it holds then is put back, not run", async () => {
    const runs = new Map<number, string[]>();
    const holding = gate();
    let blocked = 0;
    let pausedAt = Number.POSITIVE_INFINITY;
    const startedAfterThePause: number[] = [];
    const job = await submitOnce();
    const first = rt.workers.start<number, number>({
      queue: "paused",
      concurrency: 2,
      handler: async (task) => {
        runs.set(task.index, [...(runs.get(task.index) ?? []), "first"]);
        // Heard within a second of the pause: a start after that ran in a paused queue.
        if (performance.now() > pausedAt + 1_000) startedAfterThePause.push(task.index);
        if (++blocked <= 2) await holding.opened;
        return task.index;
      },
    });
    await waitUntil(() => blocked >= 2, { timeoutMs: 15_000, message: "two handlers run" });
    // The stop begins while both slots are held (stop() stops the pulls before it returns): what
    // the worker pulled waits for them.
    const stopped = first.stop();
    await rt.queues.pause("paused");
    pausedAt = performance.now();
    await waitUntil(() => first.stats().paused, { timeoutMs: 10_000, message: "the pause heard" });
    // Heard: a task that starts from now on ran in a paused queue.
    pausedAt = performance.now() - 1_000;
    holding.open();
    await stopped;
    await afterResume(job, runs, (end) => {
      expect(startedAfterThePause).toEqual([]);
      expect(end).toMatchObject({ status: "succeeded", done: TASKS, dead: 0 });
      expect([...runs.values()].filter((r) => r.length !== 1)).toEqual([]);
    });
  }, 60_000);

  /** A `maxDeliver: 1` job and a worker of two slots held by handlers until its `stopTimeoutMs` cuts them off. */
  const cutOffWorker = async (stopTimeoutMs: number) => {
    const runs = new Map<number, string[]>();
    let started = 0;
    const job = await submitOnce();
    const worker = rt.workers.start<number, number>({
      queue: "paused",
      concurrency: 2,
      // Shorter than the handlers: the stop cuts them off (their tasks die, as any cut off).
      stopTimeoutMs,
      handler: (task, ctx) => {
        runs.set(task.index, ["first"]);
        started++;
        // Never answered: only the stop's cut-off (its signal) ends it.
        return new Promise<number>((_, reject) =>
          ctx.signal.addEventListener("abort", () => reject(new Error("cut off")), { once: true }),
        );
      },
    });
    await waitUntil(() => started >= 2, { timeoutMs: 15_000, message: "two handlers run" });
    return { job, worker, runs, cutOff: [...runs.keys()] };
  };

  /** Once the queue is resumed and another worker runs it: only the two cut off died, every other task ran once. */
  const expectOnlyTheCutOffDead = ({ job, runs, cutOff }: Awaited<ReturnType<typeof cutOffWorker>>) =>
    afterResume(job, runs, (end) => {
      expect(cutOff).toHaveLength(2);
      expect(end).toMatchObject({ done: TASKS - 2, dead: 2 });
      const unrun = Array.from({ length: TASKS }, (_, n) => n).filter((n) => !runs.has(n));
      expect(unrun).toEqual([]);
      expect([...runs].filter(([n, r]) => !cutOff.includes(n) && r.join() !== "last")).toEqual([]);
    });

  it("puts back what waits for a slot its long handlers hold when a pause comes during the stop", async () => {
    const cut = await cutOffWorker(2_000);
    // The stop begins with both slots held (stop() stops the pulls before it returns): what the
    // worker pulled waits for them, and the pause comes after.
    const stopped = cut.worker.stop();
    await rt.queues.pause("paused");
    await stopped;
    await expectOnlyTheCutOffDead(cut);
  }, 60_000);

  it("puts them back at once, not after a slot its long handlers hold until stopTimeoutMs", async () => {
    const cut = await cutOffWorker(1_000);
    await rt.queues.pause("paused");
    // The worker hears the pause (a stop before that puts back nothing: held tasks wait for a
    // slot, then die at stopTimeoutMs); what it pulled meets the paused gate.
    await waitUntil(() => cut.worker.stats().paused, { timeoutMs: 10_000, message: "the pause heard" });
    await cut.worker.stop();
    await expectOnlyTheCutOffDead(cut);
  }, 60_000);
});
