import { randomUUID } from "node:crypto";
import type { JsMsg } from "@nats-io/jetstream";
import type { NatsDeadLetters } from "./adapters/nats/dead-letters.ts";
import type { NatsJobBroker } from "./adapters/nats/job-broker.ts";
import { type JobRecord, SubmitPhase } from "./effects/job-record.ts";
import { ResultBatcher } from "./effects/result-batcher.ts";
import { superviseLoop } from "./effects/supervise-loop.ts";
import { decideOutcome, PermanentError } from "./effects/task-outcome.ts";
import { InvalidArgument } from "./errors.ts";
import { childLogger, type Logger } from "./logger.ts";
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
}

export interface WorkerOptions<Payload, Result> {
  readonly queue: string | Queue<Payload, Result>;
  /** Tasks handled at once by this worker (default 8). */
  readonly concurrency?: number;
  readonly handler: (task: Task<Payload>, ctx: TaskContext) => Promise<Result> | Result;
  /** Errors to treat as permanent besides `PermanentError` (term at once, no retry). */
  readonly isPermanent?: (error: unknown) => boolean;
  /** How long `stop()` waits for running handlers before it aborts them and releases their tasks (default 30 s). */
  readonly stopTimeoutMs?: number;
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

interface ActiveJob {
  readonly record: JobRecord;
  /** Aborted when the job ends: its handlers stop and their results are dropped. */
  readonly ended: AbortController;
}

/**
 * A worker pool on one queue: pulls from the consumers of the queue's active
 * jobs (round robin, via a FIFO of slots), runs the handler, stores results
 * in batches and acks after they are stored.
 */
export const startWorker = <Payload, Result>(
  core: RuntimeCore,
  broker: NatsJobBroker,
  deadLetters: NatsDeadLetters,
  options: WorkerOptions<Payload, Result>,
): Worker => {
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
  const resultSchema = typeof options.queue === "object" ? options.queue.schema?.result : undefined;
  const id = `w${randomUUID().slice(0, 8)}`;
  const log = childLogger(core.logger, { actor: "worker", queue: queueName, workerId: id });
  const stopping = new AbortController();
  const pulling = AbortSignal.any([stopping.signal, core.stopping]);
  const slots = new FairSlots(concurrency);
  const jobs = new Map<string, ActiveJob>();
  const handlers = new Set<Promise<void>>();
  const inFlight = new Map<JsMsg, AbortController>();
  const stats = { processed: 0, failed: 0, released: 0 };
  const maxBytes = 256 * 1024;
  const batcher = new ResultBatcher((jobId, body, msgId) => broker.publishResults(jobId, body, msgId), {
    maxEntries: 100,
    maxDelayMs: 5,
    maxBytes,
    idPrefix: `${id}.${Date.now().toString(36)}`,
    onError: (error, jobId) => log.warn({ err: error, jobId }, "results not stored; tasks released"),
  });

  const release = (msg: JsMsg, delayMs?: number) => {
    stats.released++;
    msg.nak(delayMs);
  };

  const handle = async (msg: JsMsg, job: ActiveJob, signal: AbortSignal) => {
    const jobId = job.record.id;
    const attempt = msg.info.deliveryCount;
    let index = -1;
    let payload: Payload | undefined;
    let outcome: ReturnType<typeof decideOutcome>;
    let entry = "";
    try {
      const body = JSON.parse(msg.string()) as { i: number; p: Payload };
      index = body.i;
      payload = body.p;
      const result = await options.handler(
        { id: `${jobId}.${index}`, jobId, index, payload: body.p, attempt },
        {
          signal,
          heartbeat: () => msg.working(),
          progress: () => msg.working(),
          logger: log,
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
      if (signal.aborted) {
        // Cancelled job: nothing to answer. Stopping worker: hand the task back now.
        if (!job.ended.signal.aborted) release(msg);
        return;
      }
      outcome = decideOutcome(error, {
        attempt,
        maxDeliver: job.record.settings.maxDeliver,
        backoffMs: job.record.settings.backoffMs,
        ...(options.isPermanent ? { isPermanent: options.isPermanent } : {}),
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
    if (outcome.kind === "ack") stats.processed++;
    else stats.failed++;
    if (index < 0) return msg.term();
    if (outcome.kind === "dead") {
      // Keep the payload and the last error where `redrive` can find them.
      try {
        const error = outcome.error;
        await deadLetters.store(
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
    batcher.add(jobId, entry, {
      stored: () => (outcome.kind === "ack" ? msg.ack() : msg.term()),
      lost: () => release(msg),
    });
  };

  const onTask = async (msg: JsMsg, job: ActiveJob) => {
    await slots.acquire();
    if (pulling.aborted || job.ended.signal.aborted) {
      slots.release();
      if (!job.ended.signal.aborted) release(msg);
      return;
    }
    const controller = new AbortController();
    const signal = AbortSignal.any([controller.signal, job.ended.signal]);
    inFlight.set(msg, controller);
    const running = handle(msg, job, signal).finally(() => {
      inFlight.delete(msg);
      slots.release();
      handlers.delete(running);
    });
    handlers.add(running);
  };

  const follow = (record: JobRecord) => {
    const job: ActiveJob = { record, ended: new AbortController() };
    jobs.set(record.id, job);
    log.info({ jobId: record.id }, "pulling tasks of job");
    void superviseLoop(
      core.connection,
      async (nc, signal) => {
        const end = await broker.consumeTasks(
          nc,
          record.id,
          Math.min(concurrency, 256),
          (m) => onTask(m, job),
          signal,
        );
        return end === "gone" ? "done" : end;
      },
      AbortSignal.any([pulling, job.ended.signal]),
      { name: `tasks:${record.id}`, log },
    ).finally(() => {
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

  void superviseLoop(core.connection, (nc, signal) => broker.watchRecords(nc, onRecord, signal), pulling, {
    name: "job-records",
    log,
  });

  let stopped: Promise<void> | undefined;
  return {
    id,
    stats: () => ({ ...stats, inFlight: inFlight.size, activeJobs: jobs.size }),
    stop: () => {
      stopped ??= (async () => {
        stopping.abort();
        slots.close();
        const timeout = setTimeout(() => {
          for (const controller of inFlight.values()) controller.abort();
        }, options.stopTimeoutMs ?? 30_000);
        while (handlers.size > 0) await Promise.allSettled([...handlers]);
        clearTimeout(timeout);
        await batcher.flush();
        log.info({ ...stats }, "worker stopped");
      })();
      return stopped;
    },
  };
};
