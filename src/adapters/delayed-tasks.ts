import type { JobRecord } from "../kernel/job-record.ts";
import type { HeldTaskBody } from "../kernel/wire.ts";

/**
 * Held tasks one mover handles at once: many fall due together (a job held by
 * one `delayMs`), and each waits for a record read and a publish.
 */
export const moversInFlight = 64;

/** One task held until it is due, as its queue's delayed stream delivers it to a mover. */
export interface HeldTask extends HeldTaskBody {
  readonly queue: string;
  readonly jobId: string;
}

/** What the mover did with a delivery: `done` acks it (moved or dropped), `later` naks it for `ms`. */
export type HeldAnswer = { readonly kind: "done" } | { readonly kind: "later"; readonly ms: number };

/**
 * Delayed tasks on nats-server 2.9, which has no delayed messages: a submit
 * stores each task not due yet on its queue's delayed stream
 * (`<prefix>_delayed_<queue>`, subject `<prefix>.delayed.<queue>.<jobId>`,
 * work-queue retention), and the movers following the queue pull its one
 * consumer (`due`): a delivery not due yet is nak'ed with what is left of its
 * delay, so the server keeps the timer, and a due one is published to its
 * job's subject with its message id. A stream per queue, as the tasks
 * streams: a user allowed queue A alone can neither read nor pull B's held
 * tasks. `removeTasks` (a cancel, a rollback, a job's end) removes the job's
 * held tasks too.
 */
export interface DelayedTasks {
  /** Stores the job's held tasks (`dueAt`, message id and body each) before its commit. */
  holdTasks(record: JobRecord, held: readonly HeldTaskBody[], signal: AbortSignal): Promise<void>;
  /**
   * Hands every delivery of the queue's `due` consumer to `onHeld` and
   * settles it by the answer, until `signal` aborts; a delivery whose handler
   * throws is delivered again after a short pause. Makes the queue's stream
   * and consumer if they are not there yet.
   */
  consumeHeld(
    queue: string,
    onHeld: (task: HeldTask) => Promise<HeldAnswer>,
    signal: AbortSignal,
  ): Promise<void>;
  /** Publishes a due task to its job's subject with its message id: a second publish of it lands once. */
  releaseHeld(task: HeldTask): Promise<void>;
  /** How many of the job's tasks are still held (tests, the CLI). */
  heldCount(queue: string, jobId: string): Promise<number>;
}
