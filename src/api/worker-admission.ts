import type { TaskLease } from "../adapters/broker.ts";
import { leaseKeepEveryMs, priorityOf } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import type { LinkedControllers } from "../kernel/signals.ts";
import type { FairSlots } from "../kernel/slots.ts";
import type { GatePass, QueueGate, TaskLeaseKeeper } from "./queue-gate.ts";
import { type ActiveJob, RunningTask, type RunningTasks } from "./running-tasks.ts";
import { StoppingTasks } from "./worker-stopping.ts";

/** What a worker's way from a pulled task to its handler shares with the rest of the worker. */
interface AdmissionDeps {
  readonly slots: FairSlots;
  readonly running: RunningTasks;
  readonly gate: QueueGate;
  /** The worker's pull loops' controllers: a paused task waits on one linked to its job's end. */
  readonly pulls: LinkedControllers;
  /** Aborted once the worker stops (or its runtime does). */
  readonly pulling: AbortSignal;
  /** Aborted when stop() stops waiting (`stopTimeoutMs`). */
  readonly giveUp: AbortSignal;
  /** Runs the handler of a started task and answers it (worker-handle.ts). */
  readonly handle: (task: RunningTask, target: string | undefined, pass: GatePass) => Promise<void>;
  /** A task handed back unrun or failed (counted). */
  readonly release: (msg: TaskLease, delayMs?: number) => void;
  /** The worker's agent's target now, if it is bound to one. */
  readonly target: () => string | undefined;
  readonly stats: { released: number };
  readonly log: Logger;
}

/** Keeps a held task's lease at its job's pace. */
const leaseKeeper = (msg: TaskLease, job: ActiveJob): TaskLeaseKeeper => ({
  keep: () => msg.working(),
  everyMs: leaseKeepEveryMs(job.record.settings.ackWaitMs),
});

/**
 * A worker's way from a pulled task to its handler: a slot of its
 * concurrency (fair between priorities), then the queue's gate (pause,
 * limits), then the handler. In the pull loop's turn when a slot is free
 * and the queue open (most tasks of a busy worker): no promise of its own
 * then, as the pull loop awaits only what returns one. What a stopping
 * worker pulled and did not start goes to `stoppingTasks` (worker-stopping.ts).
 */
export const taskAdmission = (deps: AdmissionDeps) => {
  const { slots, running, gate, pulls, pulling, release, target: currentTarget } = deps;

  /**
   * A task pulled while its queue is paused: held, its lease kept, outside
   * the worker's slots, and tried again once the queue is resumed; this loop
   * pulls no more meanwhile. It was handed back (a nak) unless on its last
   * delivery: the server gave it to the next worker's waiting pull, which
   * handed it back too, a delivery spent at each, and with as many workers
   * as deliveries its first run was on its last one (one failure, and it
   * died).
   */
  const pausedTask = async (msg: TaskLease, job: ActiveJob): Promise<void> => {
    slots.release();
    // Until the worker stops or the job ends (linked, not an `AbortSignal.any` of `pulling`).
    const waiting = pulls.link(job.ended.signal);
    const until = waiting.signal;
    try {
      const lease = leaseKeeper(msg, job);
      const keeper = setInterval(lease.keep, lease.everyMs);
      try {
        await gate.whenResumed(until);
      } finally {
        clearInterval(keeper);
      }
    } finally {
      pulls.unlink(waiting);
    }
    // Stopping: as every task a stopping worker holds; the job ended: nothing to run.
    if (until.aborted) return stoppingTasks.take(msg, job);
    return onTask(msg, job);
  };

  /** A pulled task: a slot, then the queue's gate, then its handler. */
  const onTask = (msg: TaskLease, job: ActiveJob): void | Promise<void> =>
    slots.tryAcquire() ? withSlot(msg, job) : waitForSlot(msg, job);

  const waitForSlot = async (msg: TaskLease, job: ActiveJob): Promise<void> => {
    // A task that waits for a slot (every one busy) keeps its lease: handlers longer than half
    // of it let it run out, and the task ran twice, late here and again on another delivery.
    const held = await running.whileWaiting(job, msg, slots.waitFor(priorityOf(job.record.settings)));
    if (!held) {
      // The worker stops (no slot held), or the task waited a whole lease for one: it goes back.
      if (pulling.aborted) return stoppingTasks.take(msg, job);
      if (!job.ended.aborted || job.replaced) release(msg);
      return;
    }
    return withSlot(msg, job);
  };

  /** Holding its slot: through the gate, at once when the queue is open. */
  const withSlot = (msg: TaskLease, job: ActiveJob): void | Promise<void> => {
    const target = currentTarget();
    const pass = gate.openPass();
    return pass ? passed(msg, job, pass, target) : atGate(msg, job, target);
  };

  const atGate = async (msg: TaskLease, job: ActiveJob, target: string | undefined): Promise<void> => {
    // Until the worker stops or the job ends: a task of a job cancelled meanwhile gives its slot
    // back (within its permit pull's second). It held it until a permit came, and the next job's
    // tasks waited for a slot, each going back at its lease's end (a delivery spent).
    const waiting = pulls.link(job.ended.signal);
    let pass: Awaited<ReturnType<QueueGate["enter"]>>;
    try {
      pass = await gate.enter(waiting.signal, leaseKeeper(msg, job), target);
    } finally {
      pulls.unlink(waiting);
    }
    return passed(msg, job, pass, target);
  };

  const passed = (
    msg: TaskLease,
    job: ActiveJob,
    pass: GatePass | "paused" | undefined,
    target: string | undefined,
  ): void | Promise<void> => {
    if (pass === "paused") return pausedTask(msg, job);
    if (pass === undefined || pulling.aborted || job.ended.aborted) {
      pass?.end();
      slots.release();
      if (job.replaced && !pulling.aborted) return release(msg);
      return stoppingTasks.take(msg, job);
    }
    start(msg, job, pass, target);
  };

  /** Runs the handler of a task holding its slot and its gate pass, and answers it. */
  const start = (msg: TaskLease, job: ActiveJob, pass: GatePass, target: string | undefined): void => {
    const task = new RunningTask(msg, job, pass);
    running.start(task);
    // stop() waits for it through `running.idle()` (or hands the task back after `stopTimeoutMs`).
    void deps.handle(task, target, pass);
  };

  // What it pulled and did not start once it stops: handed back, run or put back.
  const stoppingTasks = new StoppingTasks({
    slots,
    running,
    gate,
    giveUp: deps.giveUp,
    release,
    start,
    leaseKeeper,
    target: currentTarget,
    stats: deps.stats,
    log: deps.log,
  });

  return { onTask, stoppingTasks };
};
