import type { TaskLease } from "../adapters/broker.ts";
import { priorityOf } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import type { FairSlots } from "../kernel/slots.ts";
import type { GatePass, QueueGate, TaskLeaseKeeper } from "./queue-gate.ts";
import type { ActiveJob, RunningTasks } from "./running-tasks.ts";

/** What a stopping worker's tasks share with the rest of the worker. */
interface StoppingDeps {
  readonly slots: FairSlots;
  readonly running: RunningTasks;
  readonly gate: QueueGate;
  /** Aborted when stop() stops waiting (`stopTimeoutMs`). */
  readonly giveUp: AbortSignal;
  /** A task handed back unrun (counted). */
  readonly release: (msg: TaskLease, delayMs?: number) => void;
  /** Runs the handler of a task holding its slot and its gate pass. */
  readonly start: (msg: TaskLease, job: ActiveJob, pass: GatePass, target: string | undefined) => void;
  readonly leaseKeeper: (msg: TaskLease, job: ActiveJob) => TaskLeaseKeeper;
  /** The worker's agent's target now, if it is bound to one. */
  readonly target: () => string | undefined;
  readonly stats: { released: number };
  readonly log: Logger;
}

/**
 * The tasks a stopping worker pulled and did not start. Each is handed
 * back, unless it is on its last delivery: a hand-back spends a delivery,
 * and after the last one the server never delivers the task again: it died
 * unrun, counted dead (every buffered task of a `maxDeliver: 1` job, on
 * each stop of a rolling deploy). Such a task runs once a slot of the
 * worker's concurrency and the queue's limits let it, its lease kept
 * meanwhile; one its paused queue will not run is put back
 * (`TaskLease.putBack`). Not awaited by its loop, so the loop passes on the
 * rest of what it buffered at once (each keeps its own lease); stop() waits
 * for them (`passedOn`), until `stopTimeoutMs`.
 */
export class StoppingTasks {
  readonly #deps: StoppingDeps;
  /** The tasks on their last delivery, until each has started or gone back. */
  readonly #lastChances = new Set<Promise<void>>();
  /** The put-backs under way: stop() waits for them past `stopTimeoutMs` (bounded: 3.5 s and one publish's 5 s). */
  readonly #putBacks = new Set<Promise<void>>();
  /** Set once stop() has waited for its handlers: nothing starts, or is put back, after that. */
  #over = false;

  constructor(deps: StoppingDeps) {
    this.#deps = deps;
  }

  /** A task the stopping worker will not start as usual. */
  take(msg: TaskLease, job: ActiveJob): void {
    if (job.ended.aborted || !this.#onLastDelivery(msg, job)) {
      this.#handBack(msg, job);
      return;
    }
    const started = this.#run(msg, job)
      .catch((error: unknown) =>
        this.#deps.log.warn({ err: error, jobId: job.record.id }, "task not run as its worker stopped"),
      )
      .finally(() => this.#lastChances.delete(started));
    this.#lastChances.add(started);
  }

  /** Every task taken so far has started or gone back. */
  passedOn(): Promise<unknown> {
    return Promise.all(this.#lastChances);
  }

  /**
   * Every put-back under way has stored its copy or given up: a copy and
   * its ack made on a client that closed meanwhile could leave the task
   * both counted dead (its lease run out) and run.
   */
  putBacksDone(): Promise<unknown> {
    return Promise.all(this.#putBacks);
  }

  /** stop() has waited for its handlers: nothing starts, and nothing is put back, any more. */
  over(): void {
    this.#over = true;
  }

  /** On its last delivery, its job not over, stop() not over: a release would kill it. */
  #onLastDelivery(msg: TaskLease, job: ActiveJob): boolean {
    return !this.#over && !job.ended.aborted && msg.deliveryCount >= job.record.settings.maxDeliver;
  }

  /** As `#onLastDelivery`, and it may still run: stop() has not given up waiting (`stopTimeoutMs`). */
  #lastChance(msg: TaskLease, job: ActiveJob): boolean {
    return this.#onLastDelivery(msg, job) && !this.#deps.giveUp.aborted;
  }

  async #run(msg: TaskLease, job: ActiveJob): Promise<void> {
    const { slots, running, gate, giveUp, leaseKeeper } = this.#deps;
    for (;;) {
      // A paused queue runs nothing: put back at once, not after a slot that handlers started
      // before the pause may hold until `stopTimeoutMs` (and then released: dead). Past that
      // timeout too: stop() waits for put-backs.
      if (gate.paused && this.#onLastDelivery(msg, job)) return this.#putBack(msg, job);
      if (!this.#lastChance(msg, job)) return this.#handBack(msg, job);
      // On its last delivery: the wait is not given up (only `stopTimeoutMs` ends it), unless
      // the queue is paused meanwhile: then it is put back (at `stopTimeoutMs` it was released:
      // dead). A resume heard since the pause ended the wait: it waits again.
      const wait = slots.waitFor(priorityOf(job.record.settings), true);
      const waited = new AbortController();
      void gate.whenPaused(waited.signal).then(() => {
        if (!waited.signal.aborted) wait.cancel();
      });
      if (await running.whileWaiting(job, msg, wait).finally(() => waited.abort())) break;
    }
    const target = this.#deps.target();
    const pass = this.#lastChance(msg, job)
      ? await gate.enter(giveUp, leaseKeeper(msg, job), target)
      : undefined;
    if (pass === undefined || pass === "paused" || !this.#lastChance(msg, job)) {
      if (pass !== undefined && pass !== "paused") pass.end();
      slots.release();
      // A paused queue runs nothing, not even this one, and a release would spend it: put back.
      if ((pass === "paused" || gate.paused) && this.#onLastDelivery(msg, job))
        return this.#putBack(msg, job);
      return this.#handBack(msg, job);
    }
    this.#deps.start(msg, job, pass, target);
  }

  /**
   * Handed back unrun, unless its job is over here. A job followed under another submit than
   * its record's (`replaced`: the key's job made again) is not: the task may be the record's
   * job's own, and dropped it would wait out its lease, a delivery spent.
   */
  #handBack(msg: TaskLease, job: ActiveJob): void {
    if (!job.ended.aborted || job.replaced) this.#deps.release(msg);
  }

  /** A copy of the task goes back to the queue, delivered from 1 again, unless its job ends first. */
  #putBack(msg: TaskLease, job: ActiveJob): Promise<void> {
    const { log, stats } = this.#deps;
    const fields = { jobId: job.record.id, seq: msg.seq };
    const put = msg
      .putBack(this.#deps.leaseKeeper(msg, job).everyMs, () => !job.ended.aborted)
      .then(
        (copied) => {
          if (!copied) return;
          stats.released++;
          log.debug(fields, "task on its last delivery put back: its queue is paused");
        },
        (error: unknown) =>
          log.warn(
            { ...fields, err: error },
            "task on its last delivery not put back, or its original not acked",
          ),
      )
      .finally(() => this.#putBacks.delete(put));
    this.#putBacks.add(put);
    return put;
  }
}
