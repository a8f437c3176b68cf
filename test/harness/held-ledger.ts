import { expect } from "vitest";
import type { Runtime } from "../../src/api/runtime.ts";
import { gate, waitUntil, within } from "./wait.ts";

/**
 * Handlers held behind a gate each until the test lets the running ones go,
 * counting how many run at once and the most seen: the handlers' own ledger,
 * an oracle that does not ask the runtime.
 */
export const heldLedger = () => {
  const gates = new Map<number, ReturnType<typeof gate>>();
  const running = new Set<number>();
  const ran = new Set<number>();
  const ledger = { most: 0 };
  const handler = async (task: { payload: number }) => {
    running.add(task.payload);
    ran.add(task.payload);
    ledger.most = Math.max(ledger.most, running.size);
    const held = gate();
    gates.set(task.payload, held);
    await held.opened;
    running.delete(task.payload);
    return task.payload;
  };
  /**
   * Lets `tasks` run to their end, `limit` at a time at most: waits until as
   * many as may run are running (or fails saying how many ran), then opens them.
   */
  const runThrough = async (tasks: readonly number[], limit: number, timeoutMs: number) => {
    const done = new Set<number>();
    while (done.size < tasks.length) {
      const due = Math.min(limit, tasks.length - done.size);
      await waitUntil(() => running.size >= due, {
        timeoutMs,
        message: () =>
          `${due} handlers running (${done.size} of ${tasks.length} ended, ${running.size} running, most ${ledger.most})`,
      });
      for (const i of [...running]) {
        gates.get(i)?.open();
        done.add(i);
      }
      await waitUntil(() => [...done].every((i) => !running.has(i)), {
        timeoutMs,
        message: "the handlers let go ended",
      });
    }
  };
  /** Lets the handlers of `tasks` that run now go. */
  const open = (tasks: readonly number[]) => {
    for (const i of tasks) gates.get(i)?.open();
  };
  return { handler, ledger, ran, running, runThrough, open };
};

/**
 * Workers of `queue` on each runtime (concurrency 4 each), their handlers on
 * one held ledger, and a first job of 4 tasks submitted on the first runtime
 * and run through `limit` at a time: the queue's limit seen at work before a
 * test takes its store away.
 */
export const limitedFirstJob = async (runtimes: readonly Runtime[], queue: string, limit: number) => {
  const held = heldLedger();
  const workers = runtimes.map((rt) =>
    rt.workers.start<number, number>({ queue, concurrency: 4, handler: held.handler }),
  );
  const tasks = [0, 1, 2, 3];
  const first = await (runtimes[0] as Runtime).jobs.submit({ queue, tasks, ackWaitMs: 20_000 });
  await held.runThrough(tasks, limit, 20_000);
  expect(await within(first.done(), 20_000)).toMatchObject({ status: "succeeded", done: 4 });
  return { ...held, workers };
};
