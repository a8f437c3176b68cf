import type { TaskLease } from "../adapters/broker.ts";
import type { Delivery } from "../effects/answer-task.ts";
import { type JobRecord, leaseKeepEveryMs } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import type { FairSlots } from "../kernel/slots.ts";
import { backoffDelayMs, type TaskOutcome } from "../kernel/task-outcome.ts";
import type { JobEnd } from "./job-end.ts";
import type { GatePass } from "./queue-gate.ts";
import type { Telemetry } from "./telemetry.ts";

/** A job a worker follows. */
export interface ActiveJob {
  readonly record: JobRecord;
  /**
   * The highest revision of its record the worker heard or read: a write at or below it,
   * heard late, is older news (a rollback of an earlier submit of its key ended it there).
   */
  revision: number;
  /** Aborted when the job ends: its handlers stop and their results are dropped. */
  readonly ended: JobEnd;
  /** Tasks whose handler runs: their leases are extended by `keeper`. */
  readonly running: TaskList;
  /**
   * Extends the running tasks' leases every third of the job's ack wait; set while any runs or
   * waits, and kept between two tasks while the job's own pull loop runs (`pulling`), until a
   * tick finds none running or waiting.
   */
  keeper: NodeJS.Timeout | undefined;
  /**
   * Its own pull loop runs, or the queue's lane loop pulls its tasks (a lane job of more than
   * one task, until its end is heard): its keeper is kept between two tasks. Made and cleared
   * each time its running tasks fell to none, it was a timer made per task of a busy worker
   * (quick handlers each end before the next starts).
   */
  pulling?: boolean;
  /**
   * Tasks pulled that wait for a slot, since when, and how to give up the wait: `keeper`
   * extends their leases too (made on first use).
   */
  waiting?: Map<TaskLease, { readonly since: number; readonly cancel: () => void }>;
  /**
   * Ended here because its record names another submit than the one followed (the key's job
   * made again): its tasks still waiting for a slot or at the gate are handed back, not dropped
   * as a finished job's are (they may be the record's job's own).
   */
  replaced?: boolean;
}

/**
 * A task whose handler runs. It is settled once, by whichever comes first:
 * the handler's end, the hang check (`maxTaskMs`), the job's end or stop's
 * timeout; what comes later finds it settled and does nothing, so a handler
 * that ignored its signal cannot answer a task twice.
 */
export class RunningTask {
  readonly msg: TaskLease;
  readonly job: ActiveJob;
  readonly startedAt = Date.now();
  index = -1;
  settled = false;
  /** Why it was settled before its handler ended, if it was. */
  givenUp: "hung" | "stop" | "job ended" | undefined;
  /**
   * Its permits of its queue's limits, ended by the handling once answered,
   * or here once the task is given up: a handler that never ends kept them,
   * renewed for the process's life, and at the cap nothing of the queue ran
   * again in any process.
   */
  pass: GatePass | undefined;
  /** Its neighbours in its job's `running` list, while it is in it. */
  prev: RunningTask | undefined = undefined;
  next: RunningTask | undefined = undefined;
  /** Made on first read of the handler's signal: most handlers never look at it. */
  #abort: AbortController | undefined;
  #signal: AbortSignal | undefined;
  constructor(msg: TaskLease, job: ActiveJob, pass?: GatePass) {
    this.msg = msg;
    this.job = job;
    this.pass = pass;
  }
  /**
   * The handler's signal: aborted as its job ends, or as the task is given up (hung, or handed
   * back by a stopping worker: `abort()`). Not joined with a signal of the worker's: on Node 20
   * every `AbortSignal.any` leaves a weak reference in its sources' signals that is never
   * pruned, ~85 bytes a task for the worker's whole life (the job's signal goes with the job).
   */
  signal(): AbortSignal {
    if (!this.#signal) {
      this.#abort = new AbortController();
      if (this.settled) this.#abort.abort();
      this.#signal = AbortSignal.any([this.job.ended.signal, this.#abort.signal]);
    }
    return this.#signal;
  }
  /** Given up before its handler ended: its signal aborted, its permits given back. */
  abort(): void {
    this.#abort?.abort();
    this.pass?.end();
  }
}

/**
 * A job's running tasks, linked through the tasks themselves: a `Set` that
 * took each task in and out made a new table every few tasks (its deleted
 * entries fill it), the most garbage a task left in the worker's own code.
 */
export class TaskList implements Iterable<RunningTask> {
  #head: RunningTask | undefined;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  add(task: RunningTask): void {
    task.prev = undefined;
    task.next = this.#head;
    if (this.#head) this.#head.prev = task;
    this.#head = task;
    this.#size++;
  }

  /** Takes the task out, if it is in: false when it is not. */
  delete(task: RunningTask): boolean {
    if (task.prev) task.prev.next = task.next;
    else if (this.#head === task) this.#head = task.next;
    else return false;
    if (task.next) task.next.prev = task.prev;
    task.prev = undefined;
    task.next = undefined;
    this.#size--;
    return true;
  }

  /** The tasks in it; the one handed out may be taken out before the next is asked for. */
  *[Symbol.iterator](): Iterator<RunningTask> {
    for (let task = this.#head; task !== undefined; ) {
      const next = task.next;
      yield task;
      task = next;
    }
  }
}

/**
 * The handlers a worker runs now: counted (stop() waits until none is
 * left), each in its job's list for the lease keeper, each settled once.
 * Each is a small RunningTask; its AbortController and AbortSignal.any() are
 * made only when the handler reads its signal: those cost ~15 µs of CPU per
 * task (bench/README.md).
 */
export class RunningTasks {
  readonly #slots: FairSlots;
  readonly #maxTaskMs: number;
  readonly #log: Logger;
  /** Jobs with running tasks, or kept as their keeper is (`#dropIdle`). */
  readonly #busyJobs = new Set<ActiveJob>();
  #count = 0;
  #onIdle: (() => void) | undefined;

  constructor(slots: FairSlots, maxTaskMs: number, log: Logger) {
    this.#slots = slots;
    this.#maxTaskMs = maxTaskMs;
    this.#log = log;
  }

  get count(): number {
    return this.#count;
  }

  /** Counts the task (its slot is taken) and keeps its lease until it is settled. */
  start(task: RunningTask): void {
    this.#count++;
    const job = task.job;
    job.running.add(task);
    this.#busyJobs.add(job);
    this.#keep(job);
  }

  /**
   * Keeps the lease of a task of `job` that waits for a slot, while it
   * waits: handlers longer than half of it let it run out, and the task ran
   * twice, late here and again on another delivery. Through the job's
   * keeper, one timer for all its running and waiting tasks, not one per
   * task: on a busy worker most tasks wait a little (a lane job, one task,
   * makes its keeper as its task waits or runs, as it did to run). Not for longer than the job's ack wait, unless it is the task's
   * last delivery: then the wait is given up (`held` false), and the task
   * goes back for a worker with room (holding it longer here, the worker
   * would hoard tasks another one could run now).
   */
  async whileWaiting(
    job: ActiveJob,
    msg: TaskLease,
    wait: { held: Promise<boolean>; cancel: () => void },
  ): Promise<boolean> {
    job.waiting ??= new Map();
    job.waiting.set(msg, { since: Date.now(), cancel: wait.cancel });
    this.#keep(job);
    try {
      return await wait.held;
    } finally {
      job.waiting.delete(msg);
      this.#unkeep(job);
    }
  }

  #keep(job: ActiveJob): void {
    job.keeper ??= setInterval(() => this.#keepLeases(job), leaseKeepEveryMs(job.record.settings.ackWaitMs));
  }

  /** The job's pull loop has ended: its keeper stops once none of its tasks runs or waits. */
  pullEnded(job: ActiveJob): void {
    job.pulling = false;
    this.#unkeep(job);
  }

  /** The job's keeper stops once none of its tasks runs or waits and its pull loop has ended. */
  #unkeep(job: ActiveJob): void {
    if (!job.pulling) this.#dropIdle(job);
  }

  /**
   * With none of its tasks running or waiting, the job's keeper stops. Its
   * pull loop keeps it between the tasks of a busy worker (made and
   * cleared per task otherwise); a tick that finds nothing to keep drops it
   * all the same, so a live job idle here (its tasks held elsewhere, or
   * their retries not due) holds no timer: the next task makes it again.
   */
  #dropIdle(job: ActiveJob): void {
    if (job.running.size > 0 || (job.waiting?.size ?? 0) > 0) return;
    // Left as busy until now, as its keeper: a set that took the job in and out at each task
    // made a table every few tasks.
    this.#busyJobs.delete(job);
    clearInterval(job.keeper);
    job.keeper = undefined;
  }

  /** True for the first caller only: it decides what happens to the task (and calls `done`). */
  settle(task: RunningTask): boolean {
    if (task.settled) return false;
    task.settled = true;
    const job = task.job;
    job.running.delete(task);
    if (job.running.size === 0) this.#unkeep(job);
    return true;
  }

  /** The settled task's slot is free. */
  done(): void {
    this.#count--;
    this.#slots.release();
    if (this.#count === 0) this.#onIdle?.();
  }

  /** Settles every running task of the job now; `release`: hand them back (stop), else drop them (job over). */
  settleAll(job: ActiveJob, release?: (msg: TaskLease) => void): void {
    for (const task of [...job.running]) {
      if (!this.settle(task)) continue;
      task.givenUp = release ? "stop" : "job ended";
      task.abort();
      release?.(task.msg);
      this.done();
    }
  }

  /** Hands every running task back now, whether or not its handler heeds its signal. */
  releaseAll(release: (msg: TaskLease) => void): void {
    for (const job of [...this.#busyJobs]) this.settleAll(job, release);
  }

  /** A handler answered after its task was settled (hung, or released by stop): ignored. */
  lateAnswer(task: RunningTask): void {
    // A finished job's handlers are expected to answer into the void; a hung or released task's are worth a look.
    (task.givenUp === "job ended" ? this.#log.debug : this.#log.warn).call(
      this.#log,
      {
        jobId: task.job.record.id,
        index: task.index,
        attempt: task.msg.deliveryCount,
        givenUp: task.givenUp,
      },
      "late answer of a task already given up; ignored",
    );
  }

  /** Resolves once no handler runs. */
  async idle(): Promise<void> {
    while (this.#count > 0) {
      await new Promise<void>((resolve) => {
        this.#onIdle = resolve;
      });
    }
    this.#onIdle = undefined;
  }

  /** Extends the leases of the job's running tasks; a task past `maxTaskMs` is hung instead. */
  #keepLeases(job: ActiveJob): void {
    const now = Date.now();
    const { ackWaitMs, maxDeliver } = job.record.settings;
    if (job.waiting)
      for (const [msg, waiting] of job.waiting) {
        if (now - waiting.since > ackWaitMs && msg.deliveryCount < maxDeliver) waiting.cancel();
        else msg.working();
      }
    for (const task of job.running) {
      if (now - task.startedAt < this.#maxTaskMs) task.msg.working();
      else if (this.settle(task)) {
        task.givenUp = "hung";
        task.abort();
        this.#log.warn(
          {
            jobId: job.record.id,
            index: task.index,
            attempt: task.msg.deliveryCount,
            maxTaskMs: this.#maxTaskMs,
          },
          "task hung: handler still running after maxTaskMs; signal aborted, lease left to run out",
        );
        this.done();
      }
    }
    this.#dropIdle(job);
  }
}

/**
 * A native worker's delivery: acked (or termed) once its result is stored,
 * released when that failed. One small object per task instead of closures:
 * this is the hot path.
 */
export class TaskDelivery implements Delivery {
  readonly #task: RunningTask;
  readonly #outcome: TaskOutcome["kind"];
  readonly #release: (msg: TaskLease, delayMs?: number) => void;
  readonly #log: Logger;
  readonly #telemetry: Telemetry;
  constructor(
    task: RunningTask,
    outcome: TaskOutcome["kind"],
    release: (msg: TaskLease, delayMs?: number) => void,
    log: Logger,
    telemetry: Telemetry,
  ) {
    this.#task = task;
    this.#outcome = outcome;
    this.#release = release;
    this.#log = log;
    this.#telemetry = telemetry;
  }
  stored(): void {
    const done = this.#outcome === "ack";
    if (done) this.#task.msg.ack();
    else this.#task.msg.term();
    if (this.#telemetry.active)
      this.#telemetry.emit({
        type: "task.answered",
        queue: this.#task.job.record.queue,
        outcome: done ? "done" : this.#outcome === "dead" ? "dead" : "failed",
      });
  }
  lost(): void {
    // After the job's backoff, as for a failed handler: released at once, a store that keeps
    // failing redelivered the task as fast as it failed, up to its last delivery.
    const { msg, job } = this.#task;
    this.#release(msg, backoffDelayMs(job.record.settings.backoffMs, msg.deliveryCount));
  }
  keep(): void {
    this.#task.msg.working();
  }
  retry(delayMs: number): void {
    this.#release(this.#task.msg, delayMs);
  }
  deadLetterLost(error: unknown): void {
    // Released at once: it was the last delivery, so the server's MAX_DELIVERIES advisory takes it.
    const { job, index } = this.#task;
    this.#log.warn(
      { err: error, jobId: job.record.id, index },
      "dead letter not stored; the advisory path will catch the task",
    );
    this.#release(this.#task.msg);
  }
}
