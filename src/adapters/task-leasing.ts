import type { JobTasksRef } from "../kernel/job-record.ts";

/**
 * One delivery of a task leased by reference (the HTTP pull API): `ref`
 * names the delivery, so any process on the same broker can settle it.
 */
export interface LeasedTask {
  readonly ref: string;
  /** The job whose task this is (a lane's deliveries are of many jobs). */
  readonly jobId: string;
  /** The task message: `{"i":<index>,"p":<payload>}`. */
  readonly body: string;
  readonly deliveryCount: number;
}

export type LeaseSettle =
  | { readonly ref: string; readonly action: "ack" | "term" | "working" }
  | { readonly ref: string; readonly action: "nak"; readonly delayMs: number }
  /**
   * A delivery on its task's last that no worker will get: a copy of the
   * task goes back as a new message (`back.<seq>`), delivered from 1 again,
   * then this one is acked (`TaskLease.putBack`). A nak would spend it.
   */
  | { readonly ref: string; readonly action: "putBack" };

/** What became of a delivery once its holder answered. */
export type AnswerStatus = "done" | "failed" | "dead" | "retry";

/** The answer recorded for one delivery, kept with the task on the broker. */
export interface RecordedAnswer {
  /** `pending` while the answering request runs (or if it died before it recorded the outcome). */
  readonly status: AnswerStatus | "pending";
  /** Digest of the answer given (result or error), to tell a retried POST from a different answer. */
  readonly digest: string;
  /** When it was recorded, ms since the epoch. */
  readonly at: number;
}

export type AnswerClaim =
  | { readonly claimed: true; readonly revision: number }
  | { readonly claimed: false; readonly answer: RecordedAnswer };

/**
 * Tasks leased by reference, and the answer given for each delivery, kept on
 * the broker: any process serving the HTTP API (another instance, the same
 * one restarted) sees that a delivery was answered, so a receipt cannot be
 * replayed there.
 */
export interface TaskLeasing {
  /**
   * True if `ref` names a delivery of this job's tasks (on its queue); for a
   * lane job, a delivery of its queue's lane (which job's it is, the signed
   * receipt says).
   */
  isDeliveryOf(ref: string, job: JobTasksRef): boolean;
  /**
   * Up to `max` of the job's tasks, leased at once; none if nothing is ready
   * (never waits for one). `pulling` is called just before the pull is sent,
   * once any wait for the connection is over: the server starts each
   * delivery's ack wait after that, so a lease timed from then ends before
   * the server's.
   */
  fetchTasks(queue: string, jobId: string, max: number, pulling?: () => void): Promise<LeasedTask[]>;
  /** Up to `max` tasks of the queue's lane jobs, as `fetchTasks`; each names its job. */
  fetchLane(queue: string, max: number, pulling?: () => void): Promise<LeasedTask[]>;
  /**
   * Acks, terms, naks, extends or puts back deliveries by reference; once
   * this resolves the broker has them. A put-back whose copy could not be
   * stored leaves its delivery to its lease, and the call rejects after
   * settling the rest. With `notAfter` (epoch ms), nothing is sent once it
   * has passed (a wait for the connection outlasted the deliveries' leases:
   * an ack or a nak then would reach the task's next holder, JetStream
   * answering a delivery by its stream sequence): the call rejects with
   * `ConnectionUnavailable`, which always means nothing was sent.
   */
  settle(settles: readonly LeaseSettle[], notAfter?: number): Promise<void>;
  /**
   * The payload of the task a delivery carries and its sequence in its queue's tasks stream
   * (the reference says where the task is stored): a dead letter names that message
   * (`taskSeq`), which a redrive deletes if its term was lost.
   */
  deliveredTask(ref: string): Promise<{ readonly payload: unknown; readonly seq: number }>;
  /**
   * Claims the right to answer a delivery: `claimed` if nobody answered it
   * yet, else the answer recorded first (maybe still `pending`: a claim
   * whose process died stays, which only blocks that old delivery; the task
   * itself is redelivered once its lease runs out).
   */
  claimAnswer(ref: string, digest: string): Promise<AnswerClaim>;
  /** The answer recorded for a delivery, if any. */
  answerOf(ref: string): Promise<RecordedAnswer | undefined>;
  /** Records the outcome of a claimed answer. */
  recordAnswer(ref: string, answer: RecordedAnswer, revision: number): Promise<void>;
  /** Gives a claim up (settling failed): the holder may answer again. */
  releaseAnswer(ref: string, revision: number): Promise<void>;
}
