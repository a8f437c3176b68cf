import type { JobPort } from "../effects/job-port.ts";
import type { JobRecord, JobSettings } from "../effects/job-record.ts";

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

/** Who supervises a job, until when. */
export interface SupervisionLeases {
  readonly holder: string;
  holds(jobId: string): boolean;
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
  consumerCounts(jobId: string): Promise<{ waiting: number; held: number; redelivered: number } | undefined>;

  /**
   * Delivers the job's tasks to `onTask` (awaited: at most `maxMessages`
   * leased but not yet handed over) until the job's consumer is gone
   * (resolves "gone") or `signal` aborts (resolves "stopped").
   */
  consumeTasks(
    jobId: string,
    maxMessages: number,
    onTask: (lease: TaskLease) => void | Promise<void>,
    signal: AbortSignal,
  ): Promise<"gone" | "stopped">;

  /** One results message (a JSON array); `msgId` makes a retried publish land once. */
  publishResults(jobId: string, body: string, msgId: string): Promise<void>;

  /**
   * Reads the job's results messages in order from the start, until `signal`
   * aborts. `pending` is how many more are stored right now (0: caught up);
   * `onCaughtUp` is called at once when there is nothing to read yet.
   */
  readResults(
    jobId: string,
    onMessage: (body: string, pending: number) => void,
    signal: AbortSignal,
    onCaughtUp?: () => void,
  ): Promise<void>;

  /** Makes sure exhausted tasks are captured from now on (before a job could exhaust one). */
  ensureDeadLetters(): Promise<void>;
  /** Stores a dead letter; `msgId` makes a retried store land once. */
  storeDeadLetter(letter: Omit<DeadLetter, "seq" | "taskId">, msgId: string): Promise<void>;
  listDeadLetters(jobId: string): Promise<DeadLetter[]>;
  removeDeadLetters(seqs: readonly number[]): Promise<void>;
  /**
   * Turns tasks that exhausted their deliveries unanswered into dead letters
   * and `dead` results, until `signal` aborts.
   */
  processExhausted(signal: AbortSignal): Promise<void>;

  readonly leases: SupervisionLeases;

  cleanup(
    options: CleanupOptions & { readonly retentionMs: number; readonly now?: number },
  ): Promise<CleanupReport>;

  /** Releases what the broker holds (timers, subscriptions); the runtime's connection is closed separately. */
  close(): Promise<void>;
}

export type { JobRecord, JobSettings };
