/**
 * A stopping worker's tasks of a job it followed under another submit than
 * its record's (the key's job made again: `ActiveJob.replaced`). Such a
 * task may be the record's job's own: it is handed back, as the worker does
 * when it is not stopping, not dropped (dropped, it waited out its whole
 * lease, a delivery spent). The oracle is the ledger of hand-backs the
 * worker's `release` was called with.
 */
import { describe, expect, it } from "vitest";
import type { TaskLease } from "../../src/adapters/broker.ts";
import type { ActiveJob } from "../../src/api/running-tasks.ts";
import { StoppingTasks } from "../../src/api/worker-stopping.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

/** A job followed by the worker, `maxDeliver` deliveries a task; `ended` as the worker's record watch sets it. */
const jobOf = (maxDeliver: number) => {
  const ended = { aborted: false };
  const job = { record: { id: "j1", settings: { maxDeliver, priority: 0 } }, ended, running: [] };
  return {
    job: job as unknown as ActiveJob & { replaced?: boolean },
    /** The record names another submit now: the worker ends the job it followed, as replaced. */
    replace: () => {
      ended.aborted = true;
      (job as { replaced?: boolean }).replaced = true;
    },
  };
};

const taskOf = (deliveryCount: number) => ({ seq: 7, deliveryCount }) as unknown as TaskLease;

/** A stopping worker whose one slot is busy: a task waits until `grant` (true: the slot; false: given up). */
const stoppingWorker = () => {
  const released: TaskLease[] = [];
  const started: TaskLease[] = [];
  let grant: (held: boolean) => void = () => undefined;
  const stopping = new StoppingTasks({
    slots: {
      waitFor: () => ({
        held: new Promise<boolean>((resolve) => {
          grant = resolve;
        }),
        cancel: () => grant(false),
      }),
      release: () => undefined,
    } as never,
    running: {
      whileWaiting: (_job: unknown, _msg: unknown, wait: { held: Promise<boolean> }) => wait.held,
    } as never,
    gate: {
      paused: false,
      whenPaused: () => new Promise(() => undefined),
      enter: async () => ({ end: () => undefined }),
    } as never,
    giveUp: new AbortController().signal,
    release: (msg) => released.push(msg),
    start: (msg) => started.push(msg),
    leaseKeeper: () => ({ everyMs: 1000 }) as never,
    target: () => undefined,
    stats: { released: 0 },
    log: silentLogger(),
  });
  return { stopping, released, started, grant: (held: boolean) => grant(held) };
};

describe("a stopping worker's tasks of a job made again under another submit", () => {
  it("a task taken once the job was replaced is handed back", async () => {
    const { stopping, released, started } = stoppingWorker();
    const { job, replace } = jobOf(3);
    replace();
    const task = taskOf(1);
    stopping.take(task, job);
    await stopping.passedOn();
    expect(released).toEqual([task]);
    expect(started).toEqual([]);
  });

  it("a task on its last delivery waiting for a slot when the job is replaced is handed back", async () => {
    const { stopping, released, started, grant } = stoppingWorker();
    const { job, replace } = jobOf(1);
    const task = taskOf(1);
    stopping.take(task, job);
    replace();
    grant(true);
    await stopping.passedOn();
    expect(released).toEqual([task]);
    expect(started).toEqual([]);
  });

  it("a task of a job that ended (not replaced) is dropped: its job is over", async () => {
    const { stopping, released } = stoppingWorker();
    const { job } = jobOf(3);
    (job.ended as { aborted: boolean }).aborted = true;
    stopping.take(taskOf(1), job);
    await stopping.passedOn();
    expect(released).toEqual([]);
  });
});
