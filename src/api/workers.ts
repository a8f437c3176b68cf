import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import type { Broker, TaskLease } from "../adapters/broker.ts";
import { ResultBatcher, type Settle } from "../effects/result-batcher.ts";
import { InvalidArgument, UnknownAgent } from "../kernel/errors.ts";
import { type JobRecord, SubmitPhase } from "../kernel/job-record.ts";
import { childLogger, type Logger } from "../kernel/logger.ts";
import { assertToken, type Queue, validateWith } from "../kernel/queue.ts";
import { FairSlots } from "../kernel/slots.ts";
import { decideOutcome, PermanentError, type TaskOutcome } from "../kernel/task-outcome.ts";
import { encodeProgress } from "../kernel/task-progress.ts";
import { AgentId, checkOr, number, rejectUnknownKeys, TimerMs, TimerMsOrZero } from "../kernel/validation.ts";
import type { AgentRegistry } from "./agents.ts";
import type { RuntimeCore } from "./runtime-core.ts";

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
  keep(): void {
    this.#msg.working();
  }
}

interface ActiveJob {
  readonly record: JobRecord;
  /** Aborted when the job ends: its handlers stop and their results are dropped. */
  readonly ended: AbortController;
  /** Tasks whose handler runs: their leases are extended by `keeper`. */
  readonly running: Set<RunningTask>;
  /** Extends the running tasks' leases every third of the job's ack wait; set while any runs. */
  keeper: NodeJS.Timeout | undefined;
}

/**
 * A task whose handler runs. It is settled once, by whichever comes first:
 * the handler's end, the hang check (`maxTaskMs`), the job's end or stop's
 * timeout; what comes later finds it settled and does nothing, so a handler
 * that ignored its signal cannot answer a task twice.
 */
class RunningTask {
  readonly msg: TaskLease;
  readonly job: ActiveJob;
  readonly startedAt = Date.now();
  index = -1;
  settled = false;
  /** Why it was settled before its handler ended, if it was. */
  givenUp: "hung" | "stop" | "job ended" | undefined;
  /** Made on first read of the handler's signal: most handlers never look at it. */
  #abort: AbortController | undefined;
  #signal: AbortSignal | undefined;
  constructor(msg: TaskLease, job: ActiveJob) {
    this.msg = msg;
    this.job = job;
  }
  signal(stopping: AbortSignal): AbortSignal {
    if (!this.#signal) {
      this.#abort = new AbortController();
      if (this.settled) this.#abort.abort();
      this.#signal = AbortSignal.any([stopping, this.job.ended.signal, this.#abort.signal]);
    }
    return this.#signal;
  }
  abort(): void {
    this.#abort?.abort();
  }
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
  const stopTimeoutMs = checkOr(TimerMsOrZero, options.stopTimeoutMs, "stopTimeoutMs", 30_000);
  const maxTaskMs = checkOr(TimerMs, options.maxTaskMs, "maxTaskMs", 15 * 60_000);
  const queueName = assertToken(
    typeof options.queue === "string" ? options.queue : options.queue?.name,
    "queue",
  );
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
  const resultSchema = typeof options.queue === "object" ? options.queue.schema?.result : undefined;
  const id = `w${randomUUID().slice(0, 8)}`;
  const log = childLogger(core.logger, { actor: "worker", queue: queueName, workerId: id });
  const stopping = new AbortController();
  const pulling = AbortSignal.any([stopping.signal, core.stopping]);
  // One listener per followed job and per handler reading its signal: many, and no leak.
  setMaxListeners(0, pulling);
  const slots = new FairSlots(concurrency);
  const jobs = new Map<string, ActiveJob>();
  // Handlers running now, counted (stop() waits until none is left). Each is
  // also a small RunningTask in its job's set (for the lease keeper), but its
  // AbortController and AbortSignal.any() are made only when the handler reads
  // its signal: those cost ~15 µs of CPU per task (bench/README.md).
  let running = 0;
  let onIdle: (() => void) | undefined;
  /** Aborted when stop() stops waiting: the signal of every running handler fires. */
  const giveUp = new AbortController();
  setMaxListeners(0, giveUp.signal);
  const stats = { processed: 0, failed: 0, released: 0 };
  // A results message must fit the server's max payload (with its message id header), whatever
  // that is: known before the first task is pulled (`follow` waits for it).
  let maxBytes = 256 * 1024;
  const payloadKnown = broker.maxPayload().then(
    (maxPayload) => {
      maxBytes = Math.min(maxBytes, maxPayload - 256);
    },
    (error) => log.warn({ err: error }, "server's max payload unknown; results batched up to 256 KB"),
  );
  // Every job this worker answers is of its queue.
  const publishBatch = (jobId: string, body: string, msgId: string) =>
    broker.publishResults(queueName, jobId, body, msgId);
  const batcher = new ResultBatcher(publishBatch, {
    maxEntries: 100,
    maxDelayMs: 5,
    get maxBytes() {
      return maxBytes;
    },
    idPrefix: `${id}.${Date.now().toString(36)}`,
    onError: (error, jobId) => log.warn({ err: error, jobId }, "results not stored; tasks released"),
    // While a batch's publish is retried its tasks keep their leases, as while their handlers ran.
    keepEveryMs: (jobId) => Math.max(10, (jobs.get(jobId)?.record.settings.ackWaitMs ?? 30_000) / 3),
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

  /** Jobs with running tasks (a job stays here after its pull loop ended, until they settle). */
  const busyJobs = new Set<ActiveJob>();

  const reportProgress = (jobId: string, index: number, info: unknown) => {
    const body = encodeProgress(index, info);
    if (body === undefined) log.debug({ jobId, index }, "progress note not JSON; dropped");
    else broker.publishProgress(queueName, jobId, body);
  };

  const taskSettled = () => {
    running--;
    slots.release();
    if (running === 0) onIdle?.();
  };

  /** Extends the leases of the job's running tasks; a task past `maxTaskMs` is hung instead. */
  const keepLeases = (job: ActiveJob) => {
    const now = Date.now();
    for (const task of job.running) {
      if (now - task.startedAt < maxTaskMs) task.msg.working();
      else if (settle(task)) {
        task.givenUp = "hung";
        task.abort();
        log.warn(
          { jobId: job.record.id, index: task.index, attempt: task.msg.deliveryCount, maxTaskMs },
          "task hung: handler still running after maxTaskMs; signal aborted, lease left to run out",
        );
        taskSettled();
      }
    }
  };

  const track = (task: RunningTask) => {
    const job = task.job;
    job.running.add(task);
    busyJobs.add(job);
    job.keeper ??= setInterval(() => keepLeases(job), Math.max(10, job.record.settings.ackWaitMs / 3));
  };

  /** True for the first caller only: it decides what happens to the task (and calls `taskSettled`). */
  const settle = (task: RunningTask): boolean => {
    if (task.settled) return false;
    task.settled = true;
    const job = task.job;
    job.running.delete(task);
    if (job.running.size === 0) {
      busyJobs.delete(job);
      clearInterval(job.keeper);
      job.keeper = undefined;
    }
    return true;
  };

  /** Settles every running task of the job now; `release`: hand them back (stop), else drop them (job over). */
  const settleAll = (job: ActiveJob, release?: (msg: TaskLease) => void) => {
    for (const task of [...job.running]) {
      if (!settle(task)) continue;
      task.givenUp = release ? "stop" : "job ended";
      task.abort();
      release?.(task.msg);
      taskSettled();
    }
  };

  const handle = async (task: RunningTask) => {
    const { msg, job } = task;
    const jobId = job.record.id;
    const attempt = msg.deliveryCount;
    // Read once, at the start: a failure is reported against the target the task ran on.
    const target = agentId === undefined ? undefined : agents.get(agentId)?.current;
    let payload: Payload | undefined;
    let outcome: TaskOutcome;
    let failure: unknown;
    let entry = "";
    try {
      const body = JSON.parse(msg.body) as { i: number; p: Payload };
      task.index = body.i;
      payload = body.p;
      if (attempt > 1) log.warn({ jobId, index: body.i, attempt }, "task redelivered");
      const result = await options.handler(
        { id: `${jobId}.${body.i}`, jobId, index: body.i, payload: body.p, attempt },
        {
          get signal() {
            return task.signal(giveUp.signal);
          },
          heartbeat() {
            msg.working();
          },
          progress(info: unknown) {
            msg.working();
            reportProgress(jobId, task.index, info);
          },
          logger: log,
          target,
        },
      );
      const value = resultSchema
        ? await validateWith(resultSchema, result, `result of task ${task.index}`)
        : result;
      const json = JSON.stringify(value ?? null);
      entry = `{"i":${task.index},"ok":true,"r":${json}}`;
      // Alone in its results message it must fit: a retry would never make it smaller.
      if (entry.length * 3 + 2 > maxBytes && Buffer.byteLength(entry) + 2 > maxBytes)
        throw new PermanentError(
          `result of task ${task.index} is too large for a results message (${Buffer.byteLength(entry)} bytes; at most ${maxBytes - 2})`,
        );
      outcome = { kind: "ack" };
    } catch (error) {
      if (task.settled) return lateAnswer(task);
      if (giveUp.signal.aborted || job.ended.signal.aborted) {
        // Cancelled job: nothing to answer. Stopping worker: hand the task back now.
        settle(task);
        if (!job.ended.signal.aborted) release(msg);
        return taskSettled();
      }
      failure = error;
      outcome = decideOutcome(error, {
        attempt,
        maxDeliver: job.record.settings.maxDeliver,
        backoffMs: job.record.settings.backoffMs,
        ...(options.isPermanent ? { isPermanent: options.isPermanent } : {}),
        ...(agentId === undefined ? {} : { agentId }),
      });
      if (task.index < 0) outcome = { kind: "term", error: `unreadable task message: ${String(error)}` };
      if (outcome.kind === "term" || outcome.kind === "dead") {
        entry = `{"i":${task.index},"ok":false,"e":${JSON.stringify(outcome.error)}${outcome.kind === "dead" ? ',"dead":true' : ""}}`;
      }
    }
    if (!settle(task)) return lateAnswer(task);
    try {
      await answer(task, outcome, entry, payload, failure, target);
    } finally {
      taskSettled();
    }
  };

  /** A handler answered after its task was settled (hung, or released by stop): ignored. */
  const lateAnswer = (task: RunningTask) => {
    // A finished job's handlers are expected to answer into the void; a hung or released task's are worth a look.
    (task.givenUp === "job ended" ? log.debug : log.warn).call(
      log,
      {
        jobId: task.job.record.id,
        index: task.index,
        attempt: task.msg.deliveryCount,
        givenUp: task.givenUp,
      },
      "late answer of a task already given up; ignored",
    );
  };

  const answer = async (
    task: RunningTask,
    outcome: TaskOutcome,
    entry: string,
    payload: Payload | undefined,
    failure: unknown,
    target: string | undefined,
  ) => {
    const { msg, job, index } = task;
    const jobId = job.record.id;
    const attempt = msg.deliveryCount;
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
          {
            queue: queueName,
            jobId,
            index,
            payload,
            error,
            deliveries: attempt,
            at: Date.now(),
            source: "worker",
          },
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
    const task = new RunningTask(msg, job);
    track(task);
    void handle(task);
  };

  const follow = (record: JobRecord) => {
    const job: ActiveJob = { record, ended: new AbortController(), running: new Set(), keeper: undefined };
    jobs.set(record.id, job);
    log.info({ jobId: record.id }, "pulling tasks of job");
    void payloadKnown
      .then(() =>
        broker.consumeTasks(
          record.queue,
          record.id,
          Math.min(concurrency, 256),
          (m) => onTask(m, job),
          AbortSignal.any([pulling, job.ended.signal]),
        ),
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
      // Their slots are free now, even if a handler ignores its signal; its answer is dropped.
      settleAll(job);
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
        const timeout = setTimeout(() => {
          giveUp.abort();
          // Released now, whether or not their handlers heed the signal: stop() ends on time,
          // and an answer that comes later is ignored (the task is someone else's by then).
          for (const job of [...busyJobs]) settleAll(job, release);
        }, stopTimeoutMs);
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
