import { InvalidArgument, UnknownAgent } from "../kernel/errors.ts";
import type { Logger } from "../kernel/logger.ts";
import { assertToken, type Queue, type Schema } from "../kernel/queue.ts";
import { AgentId, checkOr, number, rejectUnknownKeys, TimerMs, TimerMsOrZero } from "../kernel/validation.ts";
import type { QueueState } from "../machines/queue.machine.ts";
import type { AgentRegistry } from "./agents.ts";

export interface Task<Payload> {
  /** `<jobId>.<index>`: stable across redeliveries. */
  readonly id: string;
  readonly jobId: string;
  readonly index: number;
  readonly payload: Payload;
  /** Delivery number, from 1. */
  readonly attempt: number;
}

export interface TaskContext {
  /** Aborted when the job is cancelled or finished, or the worker stops. */
  readonly signal: AbortSignal;
  /**
   * Extends the task's lease now. Not needed to keep a slow handler's task:
   * the worker extends the lease by itself while the handler runs (up to
   * `maxTaskMs`).
   */
  heartbeat(): void;
  /**
   * Reports progress to whoever watches the job (`handle.onProgress`):
   * best effort, not stored, JSON-serialisable `info`. Also extends the lease.
   */
  progress(info: unknown): void;
  readonly logger: Logger;
  /** The bound agent's target when the task started; undefined for a worker without `agent`. */
  readonly target: string | undefined;
}

export interface WorkerOptions<Payload, Result> {
  readonly queue: string | Queue<Payload, Result>;
  /**
   * Tasks handled at once by this worker.
   * @defaultValue 8
   */
  readonly concurrency?: number;
  readonly handler: (task: Task<Payload>, ctx: TaskContext) => Promise<Result> | Result;
  /** Errors to treat as permanent besides `PermanentError` (term at once, no retry). */
  readonly isPermanent?: (error: unknown) => boolean;
  /**
   * How long `stop()` waits for running handlers before it aborts them and
   * releases their tasks; it resolves then even if a handler ignores its signal.
   * @defaultValue 30 s
   */
  readonly stopTimeoutMs?: number;
  /**
   * A handler still running after this is hung: its signal is aborted, its
   * lease is no longer extended (so the task is redelivered once the job's
   * ackWaitMs runs out, or dead-lettered after its last delivery), its slot
   * is freed, and whatever it returns later is ignored. Until then the lease
   * is extended automatically, every third of the job's ackWaitMs.
   * @defaultValue 900000 (15 min)
   */
  readonly maxTaskMs?: number;
  /**
   * Binds the worker to a registered agent: each task gets the agent's
   * current target (`ctx.target`), and a `TargetUnavailable` naming the agent
   * is reported to the agent's lock and the task retried at once on the new
   * target (after the job's backoff when the agent has nowhere to go).
   */
  readonly agent?: string;
}

export interface WorkerStats {
  readonly processed: number;
  readonly failed: number;
  readonly released: number;
  readonly inFlight: number;
  readonly activeJobs: number;
  /** Its queue is paused, as this worker has heard it (`rt.queues.pause()`): it starts no task. */
  readonly paused: boolean;
  /**
   * Its queue's settings as this worker has heard them: `loading` (not read
   * yet), `open` (no limit; also after a failed first read, until the watch
   * brings them), `limited` (a rate or a concurrency limit: a task starts
   * once it holds its permits) or `paused`.
   */
  readonly queueState: QueueState;
}

export interface Worker {
  readonly id: string;
  stats(): WorkerStats;
  /**
   * Stops pulling, finishes (or after stopTimeoutMs releases) in-flight tasks, flushes results.
   * The tasks it pulled and had not started go back, except those on their last delivery: a
   * release would spend it, so it runs them first (within its concurrency and stopTimeoutMs),
   * or, its queue paused, puts them back (a copy, delivered from 1 again). What is still on its
   * last delivery at stopTimeoutMs, running or waiting for a slot of a queue not paused, is
   * released and dies. Resolves once its watches have deleted their server consumers (not
   * waited for while the connection is down: those expire after a minute without a reader).
   */
  stop(): Promise<void>;
}

/** What a worker bound to an agent needs of the runtime's agents. */
export type WorkerAgents = Pick<AgentRegistry, "get" | "reportFailure">;

/** A worker's options, checked, with their defaults. */
export interface WorkerSettings<Payload, Result> {
  readonly queue: string;
  readonly concurrency: number;
  readonly handler: WorkerOptions<Payload, Result>["handler"];
  readonly isPermanent: ((error: unknown) => boolean) | undefined;
  readonly stopTimeoutMs: number;
  readonly maxTaskMs: number;
  readonly agentId: string | undefined;
  /** The queue's result schema: each result is checked against it before it is stored. */
  readonly resultSchema: Schema<Result> | undefined;
}

const workerKeys = [
  "queue",
  "concurrency",
  "handler",
  "isPermanent",
  "stopTimeoutMs",
  "maxTaskMs",
  "agent",
] as const;

const Concurrency = number(1, 10_000, { integer: true });

/** Checks a worker's options; throws `InvalidArgument` (or `UnknownAgent`) naming the field. */
export const workerSettings = <Payload, Result>(
  options: WorkerOptions<Payload, Result>,
  agents: Pick<WorkerAgents, "get">,
): WorkerSettings<Payload, Result> => {
  if (typeof options !== "object" || options === null) {
    throw new InvalidArgument({ message: "options: must be an object", field: "options" });
  }
  rejectUnknownKeys(options, workerKeys, "");
  const stopTimeoutMs = checkOr(TimerMsOrZero, options.stopTimeoutMs, "stopTimeoutMs", 30_000);
  const maxTaskMs = checkOr(TimerMs, options.maxTaskMs, "maxTaskMs", 15 * 60_000);
  const queue = assertToken(typeof options.queue === "string" ? options.queue : options.queue?.name, "queue");
  if (typeof options.handler !== "function") {
    throw new InvalidArgument({ message: "handler: must be a function", field: "handler" });
  }
  const concurrency = checkOr(Concurrency, options.concurrency, "concurrency", 8);
  const agentId = checkOr(AgentId, options.agent, "agent", undefined);
  if (agentId !== undefined && agents.get(agentId) === undefined) {
    throw new UnknownAgent({
      agentId,
      message: `agent: ${String(agentId)} is not registered (agents.register first)`,
    });
  }
  return {
    queue,
    concurrency,
    handler: options.handler,
    isPermanent: options.isPermanent,
    stopTimeoutMs,
    maxTaskMs,
    agentId,
    resultSchema: typeof options.queue === "object" ? options.queue.schema?.result : undefined,
  };
};
