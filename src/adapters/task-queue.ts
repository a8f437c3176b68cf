import type { JobRecord, JobSettings } from "../kernel/job-record.ts";

/** A job's tasks on the broker: published at submit, then one consumer per job (the commit point). */
export interface TaskSetup {
  publishTasks(record: JobRecord, bodies: readonly string[], signal: AbortSignal): Promise<void>;
  createConsumer(queue: string, jobId: string, settings: JobSettings): Promise<void>;
  consumerExists(queue: string, jobId: string): Promise<boolean>;
  /** Purges the job's tasks left and deletes its consumer. */
  removeTasks(queue: string, jobId: string): Promise<void>;
  /** Tells workers of the queue that a job is there to pull. */
  announceCreated(queue: string, jobId: string): Promise<void>;
}

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

/** The workers' side of a job's tasks: deliveries and what is still waiting. */
export interface TaskDelivery {
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

  /** Tasks waiting and tasks held by workers (leased, not answered); undefined when the consumer is gone. */
  consumerCounts(
    queue: string,
    jobId: string,
  ): Promise<{ waiting: number; held: number; redelivered: number } | undefined>;
}
