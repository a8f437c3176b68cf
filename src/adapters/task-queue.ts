import type { JobRecord, JobSettings, JobTasksRef, SubmitTasksRef } from "../kernel/job-record.ts";

/**
 * A job's tasks on the broker: published at submit, then one consumer per
 * job (the commit point); a lane job's tasks go to its queue's lane
 * instead (a 1-task job's publish is its commit point, a larger one's its
 * record's commit write).
 */
export interface TaskSetup {
  /**
   * On the job's own subject, or on the queue's lane for a lane job (`record.lane`); each
   * body's message id is `<jobId>.<submitId>.<n>`, `n` its position or, given, `ids[n]` (a
   * redrive names each task by its own dead letters).
   */
  publishTasks(
    record: JobRecord,
    bodies: readonly string[],
    signal: AbortSignal,
    ids?: readonly string[],
  ): Promise<void>;
  createConsumer(queue: string, jobId: string, settings: JobSettings): Promise<void>;
  /**
   * The commit point's witness: the job's consumer exists; for a lane job,
   * its task or a result of it is stored (a worker stores the result before
   * it acks, so one of the two is there once the task was published), as
   * `job.submitId` published it: a task naming another submit of the key, or
   * an answer naming one (a rolled-back submit's, stored after its rollback),
   * is no witness.
   */
  tasksCommitted(job: SubmitTasksRef): Promise<boolean>;
  /**
   * Makes a job's consumer again when it is gone while tasks of the job are
   * stored or held until due: a consumer kept in the server's memory
   * (`jobs.memoryConsumers`) is gone after a restart that kept the tasks.
   * Call it only for a job whose record says it runs (an end deletes the
   * consumer). `present`: it was there; `restored`: made again; `empty`:
   * gone, and no task of the job is stored or held. Not for a lane job (no
   * consumer of its own).
   */
  restoreConsumer(job: JobTasksRef, settings: JobSettings): Promise<ConsumerRestore>;
  /**
   * Where the job's tasks stream is now: every message stored on it is below
   * the sequence returned (`removeTasks`' `below`); 0 when the stream does not
   * exist. Read before a job's end is written, it marks the tasks that end
   * cleans up: a redrive, which publishes its tasks after its record write
   * (so after any end written before that write), stores them past it.
   */
  tasksMark(job: JobTasksRef): Promise<number>;
  /**
   * Deletes the job's consumer (a lane job has none) and removes its tasks
   * left: those stored below `below` only, when given (`tasksMark`).
   */
  removeTasks(job: JobTasksRef, below?: number): Promise<void>;
  /** Tells workers of the queue that a job is there to pull. */
  announceCreated(queue: string, jobId: string): Promise<void>;
}

/** What `restoreConsumer` found: the consumer there, made again, or gone with no task left. */
export type ConsumerRestore = "present" | "restored" | "empty";

/** A task delivered to a worker, leased until answered, released or its lease runs out. */
export interface TaskLease {
  /** The task message: `{"i":<index>,"p":<payload>}`. */
  readonly body: string;
  /** This delivery's number, from 1. */
  readonly deliveryCount: number;
  /**
   * The task message's sequence in its stream: the same for every delivery
   * of it, another for a copy published again (a redrive).
   */
  readonly seq: number;
  /** Done: remove the task. */
  ack(): void;
  /** Release for redelivery after `delayMs` (at once without). */
  nak(delayMs?: number): void;
  /**
   * Release a task its worker will not run because it stops (its pull
   * loops closed): after `delayMs`, and not before the pull requests the
   * closed loops left at the server are gone (3.5 s on NATS). nats-server
   * before 2.10.16 loses a task released while only such requests wait: it
   * is back only when its lease runs out (`closedPullsRunOutMs` in
   * `adapters/nats/pull-loops.ts`).
   */
  handBack(delayMs?: number): void;
  /** Never deliver again (a permanent failure, or the last delivery failed). */
  term(): void;
  /**
   * Lets go of a task on its last delivery that its stopping worker cannot
   * run (its queue is paused) without spending a delivery: a copy goes back
   * to the queue as a new message (message id `back.<seq>`), delivered from
   * 1 again, and this one is acked. A release would spend it: the server
   * never delivered it again, and it died unrun. On NATS the copy is stored
   * once the closed loops' pull requests are gone (3.5 s), the lease
   * extended every `keepEveryMs` meanwhile: one of those requests would take
   * it into a subscription that is gone. No copy once `wanted` says no (its
   * job ended meanwhile: its end removes the task). Resolves whether a copy
   * was stored; rejects when it could not be (this one is then left to its
   * lease).
   */
  putBack(keepEveryMs: number, wanted?: () => boolean): Promise<boolean>;
  /** Extend the lease by the job's ack wait. */
  working(): void;
}

/** A delivery from a queue's lane: the lane serves many jobs, each message names its own. */
export interface LaneLease extends TaskLease {
  readonly jobId: string;
}

/** The consumers on a queue's tasks: each job's own (by job id), and the lane's. */
export interface QueueConsumers {
  readonly jobIds: readonly string[];
  /** The lane's consumer is there, or lane tasks are stored without it (it was lost). */
  readonly lane: boolean;
}

/** The workers' side of a job's tasks: deliveries and what is still waiting. */
export interface TaskDelivery {
  /**
   * Delivers the job's tasks to `onTask` (awaited: at most `maxMessages`
   * leased but not yet handed over) until the job's consumer is gone
   * (resolves "gone") or `signal` aborts (resolves "stopped"). A loop
   * closed once `stopping` has aborted (its worker stops) hands back what
   * still reaches it, as `TaskLease.handBack` does; the lane's loop
   * (`consumeLane`) always, its `signal` being its worker's.
   */
  consumeTasks(
    queue: string,
    jobId: string,
    maxMessages: number,
    onTask: (lease: TaskLease) => void | Promise<void>,
    signal: AbortSignal,
    stopping?: AbortSignal,
  ): Promise<"gone" | "stopped">;

  /**
   * Delivers the tasks of the queue's lane jobs to `onTask`, as
   * `consumeTasks` does a job's, until `signal` aborts. The lane delivers
   * without a limit: whoever takes a delivery past its job's `maxDeliver`
   * dead-letters it instead of running it.
   */
  consumeLane(
    queue: string,
    maxMessages: number,
    onTask: (lease: LaneLease) => void | Promise<void>,
    signal: AbortSignal,
  ): Promise<"stopped">;

  /**
   * What a worker of the queue pulls, found without reading the records
   * kept: the jobs with a consumer of their own, and whether the queue's
   * lane is there.
   */
  queueConsumers(queue: string): Promise<QueueConsumers>;

  /**
   * Tasks waiting and tasks held by workers (leased, not answered); undefined
   * when the consumer is gone, and for a lane job (the lane's counts are every lane job's).
   */
  consumerCounts(
    job: JobTasksRef,
  ): Promise<{ waiting: number; held: number; redelivered: number } | undefined>;
}
