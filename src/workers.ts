import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import type { Broker, TaskLease } from "./adapters/broker.ts";
import type { AgentRegistry } from "./agents.ts";
import { type JobRecord, SubmitPhase } from "./effects/job-record.ts";
import { ResultBatcher, type Settle } from "./effects/result-batcher.ts";
import { decideOutcome, PermanentError, type TaskOutcome } from "./effects/task-outcome.ts";
import { InvalidArgument, UnknownAgent } from "./errors.ts";
import { childLogger, type Logger } from "./logger.ts";
import { rejectUnknownKeys } from "./options.ts";
import { assertToken, type Queue, validateWith } from "./queue.ts";
import type { RuntimeCore } from "./runtime.ts";
import { FairSlots } from "./slots.ts";

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
  /** Extends the task's lease (call it more often than the job's ackWaitMs). */
  heartbeat(): void;
  /** Reports progress; also extends the lease. */
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
   * How long `stop()` waits for running handlers before it aborts them and releases their tasks.
   * @defaultValue 30 s
   */
  readonly stopTimeoutMs?: number;
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
}

export interface Worker {
  readonly id: string;
  stats(): WorkerStats;
  /** Stops pulling, finishes (or after stopTimeoutMs releases) in-flight tasks, flushes results. Loses none. */
  stop(): Promise<void>;
}

/**
 * What happens to a task once its result batch is stored (or not). One small
 * object per task instead of two closures: this is the hot path.
 */
class TaskSettle implements Settle {
  readonly #msg: TaskLease;
  readonly #ok: boolean;
  readonly #release: (msg: TaskLease) => void;
  constructor(msg: TaskLease, ok: boolean, release: (msg: TaskLease) => void) {
    this.#msg = msg;
    this.#ok = ok;
    this.#release = release;
  }
  stored(): void {
    if (this.#ok) this.#msg.ack();
    else this.#msg.term();
  }
  lost(): void {
    this.#release(this.#msg);
  }
}

interface ActiveJob {
  readonly record: JobRecord;
  /** Aborted when the job ends: its handlers stop and their results are dropped. */
  readonly ended: AbortController;
}

const workerKeys = ["queue", "concurrency", "handler", "isPermanent", "stopTimeoutMs", "agent"] as const;

/** What a worker bound to an agent needs of the runtime's agents. */
export type WorkerAgents = Pick<AgentRegistry, "get" | "reportFailure">;

/**
 * A worker pool on one queue: pulls from the consumers of the queue's active
 * jobs (round robin, via a FIFO of slots), runs the handler, stores results
 * in batches and acks after they are stored.
 */
export const startWorker = <Payload, Result>(
  core: Pick<RuntimeCore, "logger" | "stopping">,
  broker: Broker,
  agents: WorkerAgents,
  options: WorkerOptions<Payload, Result>,
): Worker => {
  if (typeof options !== "object" || options === null) {
    throw new InvalidArgument({ message: "options: must be an object", field: "options" });
  }
  rejectUnknownKeys(options, workerKeys, "");
  const stopTimeoutMs = options.stopTimeoutMs ?? 30_000;
  if (typeof stopTimeoutMs !== "number" || !Number.isFinite(stopTimeoutMs) || stopTimeoutMs < 0) {
    throw new InvalidArgument({ message: "stopTimeoutMs: must be a number ≥ 0", field: "stopTimeoutMs" });
  }
  const queueName = assertToken(
    typeof options.queue === "string" ? options.queue : options.queue?.name,
    "queue",
  );
  if (typeof options.handler !== "function") {
    throw new InvalidArgument({ message: "handler: must be a function", field: "handler" });
  }
  const concurrency = options.concurrency ?? 8;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 10_000) {
    throw new InvalidArgument({ message: "concurrency: must be an integer 1–10000", field: "concurrency" });
  }
  const agentId = options.agent;
  if (agentId !== undefined && agents.get(agentId) === undefined) {
    throw new UnknownAgent({
      agentId,
      message: `agent: ${String(agentId)} is not registered (agents.register first)`,
    });
  }
  const resultSchema = typeof options.queue === "object" ? options.queue.schema?.result : undefined;
  const id = `w${randomUUID().slice(0, 8)}`;
  const log = childLogger(core.logger, { actor: "worker", queue: queueName, workerId: id });
  const stopping = new AbortController();
  const pulling = AbortSignal.any([stopping.signal, core.stopping]);
  // One listener per followed job and per handler reading its signal: many, and no leak.
  setMaxListeners(0, pulling);
  const slots = new FairSlots(concurrency);
  const jobs = new Map<string, ActiveJob>();
  // Handlers running now, counted (stop() waits until none is left) rather
  // than tracked per task: a Map entry, an AbortController and an
  // AbortSignal.any() per task cost ~15 µs of CPU each (bench/README.md).
  let running = 0;
  let onIdle: (() => void) | undefined;
  /** Aborted when stop() stops waiting: the signal of every running handler fires. */
  const giveUp = new AbortController();
  setMaxListeners(0, giveUp.signal);
  const stats = { processed: 0, failed: 0, released: 0 };
  const maxBytes = 256 * 1024;
  const batcher = new ResultBatcher((jobId, body, msgId) => broker.publishResults(jobId, body, msgId), {
    maxEntries: 100,
    maxDelayMs: 5,
    maxBytes,
    idPrefix: `${id}.${Date.now().toString(36)}`,
    onError: (error, jobId) => log.warn({ err: error, jobId }, "results not stored; tasks released"),
  });

  const release = (msg: TaskLease, delayMs?: number) => {
    stats.released++;
    msg.nak(delayMs);
  };

  /**
   * Reports the task's failed target to the agent's lock and waits for the
   * lock's answer: when the agent moved on (this failure switched it, or an
   * earlier one did) the task goes back at once, to run on the new target.
   */
  const failOver = async (
    msg: TaskLease,
    outcome: Extract<TaskOutcome, { kind: "failover" }>,
    target: string | undefined,
    error: unknown,
    task: { jobId: string; index: number; attempt: number },
  ) => {
    let delayMs = outcome.delayMs;
    // The lock may queue this report behind others: keep the lease meanwhile.
    msg.working();
    try {
      // Always set: a bound worker starts only for a registered agent, and agents stay registered.
      const result =
        target === undefined ? undefined : await agents.reportFailure(outcome.agentId, { target, error });
      if (result !== undefined && result.outcome !== "exhausted") delayMs = 0;
      log.debug({ ...task, target, result, delayMs }, "target unavailable; task released");
    } catch (reportError) {
      log.warn({ ...task, target, err: reportError }, "target failure not reported; task retried later");
    }
    release(msg, delayMs);
  };

  const taskSettled = () => {
    running--;
    slots.release();
    if (running === 0) onIdle?.();
  };

  const handle = async (msg: TaskLease, job: ActiveJob) => {
    const jobId = job.record.id;
    const attempt = msg.deliveryCount;
    // Read once, at the start: a failure is reported against the target the task ran on.
    const target = agentId === undefined ? undefined : agents.get(agentId)?.current;
    let index = -1;
    let payload: Payload | undefined;
    let outcome: TaskOutcome;
    let failure: unknown;
    let entry = "";
    // The handler's abort signal, made on first read (below).
    let signal: AbortSignal | undefined;
    try {
      const body = JSON.parse(msg.body) as { i: number; p: Payload };
      index = body.i;
      payload = body.p;
      const result = await options.handler(
        { id: `${jobId}.${index}`, jobId, index, payload: body.p, attempt },
        {
          // Made on first read: most handlers never look at it.
          get signal() {
            signal ??= AbortSignal.any([giveUp.signal, job.ended.signal]);
            return signal;
          },
          heartbeat() {
            msg.working();
          },
          progress() {
            msg.working();
          },
          logger: log,
          target,
        },
      );
      const value = resultSchema
        ? await validateWith(resultSchema, result, `result of task ${index}`)
        : result;
      const json = JSON.stringify(value ?? null);
      if (json.length > maxBytes - 64)
        throw new PermanentError(`result of task ${index} is too large (${json.length} bytes)`);
      entry = `{"i":${index},"ok":true,"r":${json}}`;
      outcome = { kind: "ack" };
    } catch (error) {
      if (giveUp.signal.aborted || job.ended.signal.aborted) {
        // Cancelled job: nothing to answer. Stopping worker: hand the task back now.
        if (!job.ended.signal.aborted) release(msg);
        return;
      }
      failure = error;
      outcome = decideOutcome(error, {
        attempt,
        maxDeliver: job.record.settings.maxDeliver,
        backoffMs: job.record.settings.backoffMs,
        ...(options.isPermanent ? { isPermanent: options.isPermanent } : {}),
        ...(agentId === undefined ? {} : { agentId }),
      });
      if (index < 0) outcome = { kind: "term", error: `unreadable task message: ${String(error)}` };
      if (outcome.kind === "term" || outcome.kind === "dead") {
        entry = `{"i":${index},"ok":false,"e":${JSON.stringify(outcome.error)}${outcome.kind === "dead" ? ',"dead":true' : ""}}`;
      }
    }
    if (outcome.kind === "nak") {
      log.debug(
        { jobId, index, attempt, delayMs: outcome.delayMs, error: outcome.error },
        "task failed; retry later",
      );
      return release(msg, outcome.delayMs);
    }
    if (outcome.kind === "failover")
      return failOver(msg, outcome, target, failure, { jobId, index, attempt });
    if (outcome.kind === "ack") stats.processed++;
    else stats.failed++;
    if (index < 0) return msg.term();
    if (outcome.kind === "dead") {
      // Keep the payload and the last error where `redrive` can find them.
      try {
        const error = outcome.error;
        await broker.storeDeadLetter(
          { jobId, index, payload, error, deliveries: attempt, at: Date.now(), source: "worker" },
          `deadw.${jobId}.${index}.${attempt}`,
        );
      } catch (error) {
        log.warn(
          { err: error, jobId, index },
          "dead letter not stored; the advisory path will catch the task",
        );
        return release(msg);
      }
    }
    batcher.add(jobId, entry, new TaskSettle(msg, outcome.kind === "ack", release));
  };

  const onTask = async (msg: TaskLease, job: ActiveJob) => {
    await slots.acquire();
    if (pulling.aborted || job.ended.signal.aborted) {
      slots.release();
      if (!job.ended.signal.aborted) release(msg);
      return;
    }
    running++;
    void handle(msg, job).finally(taskSettled);
  };

  const follow = (record: JobRecord) => {
    const job: ActiveJob = { record, ended: new AbortController() };
    jobs.set(record.id, job);
    log.info({ jobId: record.id }, "pulling tasks of job");
    void broker
      .consumeTasks(
        record.id,
        Math.min(concurrency, 256),
        (m) => onTask(m, job),
        AbortSignal.any([pulling, job.ended.signal]),
      )
      .catch((error) => log.warn({ err: error, jobId: record.id }, "pulling tasks failed"))
      .finally(() => {
        if (jobs.get(record.id) === job) jobs.delete(record.id);
      });
  };

  const onRecord = (record: JobRecord) => {
    if (record.queue !== queueName) return;
    const active =
      record.phase === SubmitPhase.committed && (record.status === "running" || record.status === "stalled");
    const job = jobs.get(record.id);
    if (active && !job) follow(record);
    if (!active && job) {
      // Finished or cancelled: abort its handlers, drop what they would answer.
      job.ended.abort();
      batcher.drop(record.id);
      jobs.delete(record.id);
    }
  };

  void broker.watchRecords(onRecord, pulling).catch((error) => log.warn({ err: error }, "job watch failed"));

  let stopped: Promise<void> | undefined;
  return {
    id,
    stats: () => ({ ...stats, inFlight: running, activeJobs: jobs.size }),
    stop: () => {
      stopped ??= (async () => {
        stopping.abort();
        slots.close();
        const timeout = setTimeout(() => giveUp.abort(), stopTimeoutMs);
        while (running > 0) {
          await new Promise<void>((resolve) => {
            onIdle = resolve;
          });
        }
        onIdle = undefined;
        clearTimeout(timeout);
        await batcher.flush();
        log.info({ ...stats }, "worker stopped");
      })();
      return stopped;
    },
  };
};
