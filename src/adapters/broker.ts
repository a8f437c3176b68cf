import type { JobRecord, JobSettings } from "../kernel/job-record.ts";
import type { JobPort } from "./job-port.ts";

/**
 * The broker port: everything jobs, workers and the job actor need from a
 * message broker, written down once. Two implementations keep the same
 * semantics, checked by one contract suite (test/contract/):
 * - NATS JetStream (src/adapters/nats/nats-broker.ts), for production;
 * - in memory (src/adapters/memory/memory-broker.ts), the embedded default
 *   when no NATS is configured, and the base of `jetstate-jobs/testing`.
 *
 * Long-running methods (`consumeTasks`, `readResults`, `watchRecords`,
 * `processExhausted`) run until their signal aborts (or the job's consumer
 * is gone) and keep themselves alive across reconnects.
 */

/** A task delivered to a worker, leased until answered, released or its lease runs out. */
export interface TaskLease {
  /** The task message: `{"i":<index>,"p":<payload>}`. */
  readonly body: string;
  /** This delivery's number, from 1. */
  readonly deliveryCount: number;
  /** Done: remove the task. */
  ack(): void;
  /** Release for redelivery after `delayMs` (at once without). */
  nak(delayMs?: number): void;
  /** Never deliver again (a permanent failure, or the last delivery failed). */
  term(): void;
  /** Extend the lease by the job's ack wait. */
  working(): void;
}

/** A task that exhausted its deliveries, kept with its payload so it can be redriven. */
export interface DeadLetter {
  readonly queue: string;
  readonly jobId: string;
  readonly index: number;
  readonly taskId: string;
  /** The task's payload, as submitted. */
  readonly payload: unknown;
  readonly error: string;
  readonly deliveries: number;
  readonly at: number;
  /** `worker`: the handler failed on the last delivery; `advisory`: nobody answered it (worker died, lease ran out). */
  readonly source: "worker" | "advisory";
  /** Position in the dead-letter store (for removal on redrive). */
  readonly seq: number;
}

/**
 * One delivery of a task leased by reference (the HTTP pull API): `ref`
 * names the delivery, so any process on the same broker can settle it.
 */
export interface LeasedTask {
  readonly ref: string;
  /** The task message: `{"i":<index>,"p":<payload>}`. */
  readonly body: string;
  readonly deliveryCount: number;
}

export type LeaseSettle =
  | { readonly ref: string; readonly action: "ack" | "term" | "working" }
  | { readonly ref: string; readonly action: "nak"; readonly delayMs: number };

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
  /** True if `ref` names a delivery of this job's tasks (on its queue). */
  isDeliveryOf(ref: string, queue: string, jobId: string): boolean;
  /** Up to `max` of the job's tasks, leased at once; none if nothing is ready (never waits for one). */
  fetchTasks(queue: string, jobId: string, max: number): Promise<LeasedTask[]>;
  /** Acks, terms, naks or extends deliveries by reference; once this resolves the broker has them. */
  settle(settles: readonly LeaseSettle[]): Promise<void>;
  /** The payload of the task a delivery carries (the reference says where the task is stored). */
  taskPayload(ref: string): Promise<unknown>;
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

/** An exhausted task whose dead letter could not be stored (a permanent error). */
export interface UnhandledExhausted {
  readonly queue: string;
  readonly jobId: string;
  /** The task's index; undefined when its message is not a task of jetstate's. */
  readonly index: number | undefined;
  readonly error: unknown;
  /** Whether its `dead` result was stored, so the job counts it and can end. */
  readonly countedDead: boolean;
}

/** Who supervises a job, until when. */
export interface SupervisionLeases {
  readonly holder: string;
  /** True until the expiry last written (`now`: the runtime's clock); a holder whose renewals fail stops holding. */
  holds(jobId: string, now?: number): boolean;
  /** Takes the lease if free, expired or already ours; true when held now. */
  acquire(jobId: string, ttlMs: number, now?: number): Promise<boolean>;
  /** Extends a held lease; false (and no longer held) when another runtime took it. */
  renew(jobId: string, ttlMs: number, now?: number): Promise<boolean>;
  release(jobId: string): Promise<void>;
  list(): Promise<Array<{ jobId: string; lease: { holder: string; until: number } }>>;
  remove(jobId: string): Promise<void>;
}

export interface CleanupOptions {
  /** Only report what would be removed (default false). */
  readonly dryRun?: boolean;
  /** Finished jobs older than this lose their record, results and dead letters (default: the runtime's retention). */
  readonly retentionMs?: number;
}

export interface CleanupReport {
  readonly dryRun: boolean;
  /** Job consumers of finished or unknown jobs. */
  readonly consumersDeleted: string[];
  /** Task subjects of finished or unknown jobs that still held messages. */
  readonly tasksPurged: string[];
  /** Finished jobs past the retention period: record, results and dead letters removed. */
  readonly recordsRemoved: string[];
  /** Results of jobs that have no record any more. */
  readonly resultsPurged: string[];
  /** Supervision leases of finished or unknown jobs. */
  readonly leasesRemoved: string[];
}

export interface Broker extends JobPort {
  readonly kind: "nats" | "memory";
  /** Largest message the broker takes, in bytes. */
  maxPayload(): Promise<number>;

  /** Calls `onRecord` with every record, then with every change, until `signal` aborts. */
  watchRecords(onRecord: (record: JobRecord) => void, signal: AbortSignal): Promise<void>;

  /** Tasks waiting and tasks held by workers (leased, not answered); undefined when the consumer is gone. */
  consumerCounts(
    queue: string,
    jobId: string,
  ): Promise<{ waiting: number; held: number; redelivered: number } | undefined>;

  /**
   * Delivers the job's tasks to `onTask` (awaited: at most `maxMessages`
   * leased but not yet handed over) until the job's consumer is gone
   * (resolves "gone") or `signal` aborts (resolves "stopped").
   */
  consumeTasks(
    queue: string,
    jobId: string,
    maxMessages: number,
    onTask: (lease: TaskLease) => void | Promise<void>,
    signal: AbortSignal,
  ): Promise<"gone" | "stopped">;

  /** One results message (a JSON array); `msgId` makes a retried publish land once. */
  publishResults(queue: string, jobId: string, body: string, msgId: string): Promise<void>;

  /**
   * Reads the job's results messages in order from the start, until `signal`
   * aborts. `pending` is how many more are stored right now (0: caught up);
   * `onCaughtUp` is called at once when there is nothing to read yet.
   */
  readResults(
    queue: string,
    jobId: string,
    onMessage: (body: string, pending: number) => void,
    signal: AbortSignal,
    onCaughtUp?: () => void,
  ): Promise<void>;

  /**
   * Best effort, never stored: one task's progress note to whoever watches
   * the job right now (core NATS, `<prefix>.progress.<queue>.<jobId>`).
   * Dropped while disconnected, or when too large; never throws.
   */
  publishProgress(queue: string, jobId: string, body: string): void;
  /** Calls `onNote` with each progress note of the job published from now on, until `signal` aborts. */
  watchProgress(queue: string, jobId: string, onNote: (body: string) => void, signal: AbortSignal): void;

  /** Makes sure the queue's exhausted tasks are captured from now on (before a job of it could exhaust one). */
  ensureDeadLetters(queue: string): Promise<void>;
  /** Stores a dead letter; `msgId` makes a retried store land once. */
  storeDeadLetter(letter: Omit<DeadLetter, "seq" | "taskId">, msgId: string): Promise<void>;
  listDeadLetters(queue: string, jobId: string): Promise<DeadLetter[]>;
  removeDeadLetters(seqs: readonly number[]): Promise<void>;
  /**
   * Turns tasks that exhausted their deliveries unanswered into dead letters
   * and `dead` results, on every queue (those set up by any runtime, found as
   * they appear), until `signal` aborts. An exhausted task that cannot
   * be dead-lettered for a reason a retry cannot fix is never retried: it is
   * counted dead for its job if it can be, removed, and told to `onUnhandled`.
   */
  processExhausted(signal: AbortSignal, onUnhandled?: (failure: UnhandledExhausted) => void): Promise<void>;

  readonly leases: SupervisionLeases;
  /** Leasing by reference and recorded answers, for the HTTP pull API. */
  readonly taskLeasing: TaskLeasing;

  cleanup(
    options: CleanupOptions & { readonly retentionMs: number; readonly now?: number },
  ): Promise<CleanupReport>;

  /** Creates the shared streams and buckets, and those of `queues`, unless they exist. */
  provision(queues: readonly string[]): Promise<void>;

  /** Releases what the broker holds (timers, subscriptions); the runtime's connection is closed separately. */
  close(): Promise<void>;
}

export type { JobRecord, JobSettings };
