import type { ServerTime } from "../../kernel/clock.ts";
import type { JobRecord } from "../../kernel/job-record.ts";
import type { AnswerStatus, TaskLeasing } from "../broker.ts";
import type { TokenScope } from "./token-scopes.ts";

/**
 * What the HTTP pull API's leases need from the broker, and what they
 * answer: reserved tasks, per-item outcomes of posted results, heartbeats.
 */

/** What the leases need from the broker (the port's task leasing, records and results; unit tests fake it). */
export interface LeasePort
  extends Pick<
    TaskLeasing,
    | "isDeliveryOf"
    | "fetchTasks"
    | "fetchLane"
    | "settle"
    | "claimAnswer"
    | "answerOf"
    | "recordAnswer"
    | "releaseAnswer"
  > {
  getRecord(id: string): Promise<{ record: JobRecord } | undefined>;
  /**
   * The jobs that may be running: candidates, each read again before its
   * tasks are leased. Not every record kept: what it costs must not grow
   * with the jobs that ended.
   */
  activeJobs(): Promise<JobRecord[]>;
  /** True while the queue is paused (`rt.queues.pause`): none of its tasks is leased then. */
  isPaused?(queue: string): Promise<boolean>;
  /** The queue's limits (`rt.queues.configure`), obeyed by leases as by native workers. */
  readonly limits?: LeaseLimits;
  publishResults(queue: string, jobId: string, body: string, msgId: string): Promise<void>;
  /**
   * The server's clock as this instance reads it (a reading kept while it
   * holds, else one read now), undefined when it cannot be read: receipts'
   * ends are on it (receipt-clock.ts). A port without it takes this
   * instance's clock for the server's.
   */
  serverTime?(): Promise<ServerTime | undefined>;
  /** The server's max payload: a results message is planned under it (256 KiB without). */
  maxPayload?(): Promise<number>;
  /**
   * A remote worker's answer was stored (`done`, `failed` or `dead`; its task
   * is acked or termed next), on its `attempt`th delivery: what the metrics
   * count of native workers, told of the HTTP API's too.
   */
  answered?(queue: string, status: "done" | "failed" | "dead", attempt: number): void;
  /**
   * Keeps a task that died on its last delivery (payload read from the task
   * store, last error) as a dead letter, so it can be redriven like one that
   * died at a native worker. Answers its sequence in the dead-letter store,
   * which the task's dead answer names (none: it names no letter).
   */
  storeDeadLetter(letter: {
    queue: string;
    jobId: string;
    index: number;
    ref: string;
    error: string;
    deliveries: number;
    /** The submit its dead answer names, on a 1-task lane job (`DeadLetterFields.submit`). */
    submit?: string | undefined;
  }): Promise<number | undefined> | Promise<void>;
}

/** Who calls: the token's identity and scope. */
export type Caller = Pick<TokenScope, "identity" | "allows">;

export interface ReservedTask {
  readonly id: string;
  readonly jobId: string;
  readonly index: number;
  readonly attempt: number;
  readonly payload: unknown;
  readonly receipt: string;
  /** The lease ends this many ms after the answer is sent (heartbeat before). */
  readonly leaseMs: number;
}

type ItemStatus = AnswerStatus | "expired" | "pending" | "conflict";

export interface ItemOutcome {
  readonly id: string;
  readonly status: ItemStatus;
  /** This receipt was answered before with the same answer: nothing was done again; `status` is the first answer's. */
  readonly duplicate?: true;
  /** For `conflict`: the delivery was answered before, differently; what the first answer did. */
  readonly answered?: AnswerStatus | "pending";
  /** For `retry`: when the task is offered again. */
  readonly retryInMs?: number;
}

export type HeartbeatOutcome =
  | { readonly id: string; readonly status: "extended"; readonly receipt: string; readonly leaseMs: number }
  | { readonly id: string; readonly status: "expired" | "settled" };

/**
 * The queue's limits as the HTTP leases take them: permits taken before the
 * tasks are leased (none free: no task), a concurrency permit held for each
 * lease's life.
 */
export interface LeaseLimits {
  /**
   * Up to `max` leases the queue's limits allow, waiting at most a second
   * for the first (none: no task); `bind` must follow, with the tasks leased.
   */
  admit(queue: string, max: number, signal?: AbortSignal): Promise<LeaseAdmission>;
  /**
   * The lease was extended (heartbeat) until `until` (epoch ms): its permit
   * is held until then, by whichever instance holds it (`queue` given: one
   * that holds none tells the others). `booked`: the lease's token slot is
   * this instance's (`LeaseBook`); when it is not, the others are told
   * whatever the queue's limits, so the instance that made it keeps the slot.
   */
  extend(ref: string, until: number, queue?: string, booked?: boolean): void;
  /** The lease's task was answered (or its lease, or its job, is over): its permit goes back, wherever held. */
  end(ref: string, queue?: string): void;
  /**
   * The token slots booked here hear the other instances' notes too, of the
   * queues `slots.queues()` names; the function returned is called once
   * leases of a queue are booked: its notes are heard from then on.
   */
  follow(slots: NotedSlots): (queue: string) => void;
}

/** The token slots of the leases made through this instance (`LeaseBook`), as lease notes reach them. */
export interface NotedSlots {
  /** The queues of the leases booked here and open at `now`. */
  queues(now: number): Iterable<string>;
  /** Another instance moved the lease's end (a heartbeat there) or ended it. */
  noted(ref: string, until: number | "ended"): void;
}

export interface LeaseAdmission {
  readonly slots: number;
  /** The tasks leased (at most `slots`), each holding a permit until its `until`; the others go back. */
  bind(leases: ReadonlyArray<{ readonly ref: string; readonly until: number }>): void;
}
