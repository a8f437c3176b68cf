import { createHash, randomUUID } from "node:crypto";
import { InvalidArgument } from "../errors.ts";
import { rejectUnknownKeys } from "../options.ts";
import { assertToken, type Queue, validateWith } from "../queue.ts";
import { type JobRecord, type JobSettings, SubmitPhase } from "./job-record.ts";

export interface SubmitRequest<Task = unknown, Result = unknown> {
  /** A queue name or a queue made with `defineQueue` (typed, optionally validated). */
  readonly queue: string | Queue<Task, Result>;
  readonly tasks: readonly Task[];
  /** Same key → the same job, and no task is published twice. */
  readonly idempotencyKey?: string;
  /**
   * Share of tasks (0..1) that may fail or die while the job still succeeds.
   * @defaultValue 0
   */
  readonly maxFailures?: number;
  /**
   * A task not answered (nor heartbeated) within this is redelivered.
   * @defaultValue 30 s
   */
  readonly ackWaitMs?: number;
  /**
   * Deliveries of one task before it is dead.
   * @defaultValue 5
   */
  readonly maxDeliver?: number;
  /**
   * Redelivery delay after a transient error, per attempt; the last repeats.
   * @defaultValue 1 s, 5 s, 15 s
   */
  readonly backoff?: readonly number[];
  /**
   * No progress for this long while tasks remain → `stalled`.
   * @defaultValue 60 s
   */
  readonly stallAfterMs?: number;
  /**
   * Stalled for this long → `failed`.
   * @defaultValue 0: never
   */
  readonly stalledTimeoutMs?: number;
}

const requestKeys = [
  "queue",
  "tasks",
  "idempotencyKey",
  "maxFailures",
  "ackWaitMs",
  "maxDeliver",
  "backoff",
  "stallAfterMs",
  "stalledTimeoutMs",
] as const;

export const maxTasksPerJob = 1_000_000;
/** Room the message id and headers take next to a task body. */
const envelopeBytes = 256;

export interface SubmitPlan {
  readonly record: JobRecord;
  /** One message body per task: `{"i":n,"p":<payload>}`. */
  readonly bodies: readonly string[];
}

const bad = (field: string, message: string): never => {
  throw new InvalidArgument({ message: `${field}: ${message}`, field });
};

const positiveInt = (value: unknown, field: string, fallback: number, min = 1) => {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min) {
    return bad(field, `must be an integer ≥ ${min}`);
  }
  return value;
};

/** A job id that is a valid subject token, KV key and consumer name. */
export const jobIdFor = (idempotencyKey: string | undefined): string =>
  idempotencyKey === undefined
    ? `j${randomUUID().replaceAll("-", "")}`
    : `k${createHash("sha256").update(idempotencyKey).digest("base64url").slice(0, 32)}`;

/**
 * Checks a submit request completely and encodes its tasks, before anything
 * is written: a bad request fails with `InvalidArgument` naming the field (and
 * the task index), and NATS never sees it.
 */
export const planSubmit = async <Task, Result>(
  request: SubmitRequest<Task, Result>,
  maxPayload: number,
  now: number,
): Promise<SubmitPlan> => {
  if (typeof request !== "object" || request === null) return bad("request", "must be an object");
  rejectUnknownKeys(request, requestKeys, "");
  const queue = typeof request.queue === "string" ? request.queue : request.queue?.name;
  assertToken(queue, "queue");
  const schema = typeof request.queue === "object" ? request.queue.schema?.task : undefined;
  const tasks = request.tasks;
  if (!Array.isArray(tasks)) return bad("tasks", "must be an array");
  if (tasks.length === 0) return bad("tasks", "a job needs at least one task");
  if (tasks.length > maxTasksPerJob) return bad("tasks", `at most ${maxTasksPerJob} tasks per job`);
  const key = request.idempotencyKey;
  if (key !== undefined && (typeof key !== "string" || key.length === 0 || key.length > 512)) {
    bad("idempotencyKey", "must be a string of 1–512 characters");
  }
  const maxFailures = request.maxFailures ?? 0;
  if (typeof maxFailures !== "number" || !(maxFailures >= 0 && maxFailures <= 1)) {
    bad("maxFailures", "must be a number between 0 and 1 (a share of the tasks)");
  }
  const backoff = request.backoff ?? [1000, 5000, 15_000];
  if (
    !Array.isArray(backoff) ||
    backoff.length === 0 ||
    backoff.some((d) => typeof d !== "number" || !(d >= 0))
  ) {
    bad("backoff", "must be a non-empty array of delays ≥ 0 ms");
  }
  const settings: JobSettings = {
    maxFailures,
    ackWaitMs: positiveInt(request.ackWaitMs, "ackWaitMs", 30_000, 100),
    maxDeliver: positiveInt(request.maxDeliver, "maxDeliver", 5),
    backoffMs: backoff,
    stallAfterMs: positiveInt(request.stallAfterMs, "stallAfterMs", 60_000),
    stalledTimeoutMs: positiveInt(request.stalledTimeoutMs, "stalledTimeoutMs", 0, 0),
  };
  const bodies: string[] = new Array(tasks.length);
  const limit = maxPayload - envelopeBytes;
  for (let n = 0; n < tasks.length; n++) {
    const task = schema ? await validateWith(schema, tasks[n], `tasks[${n}]`) : tasks[n];
    let json: string | undefined;
    try {
      json = JSON.stringify(task);
    } catch (error) {
      bad(`tasks[${n}]`, `cannot be serialised to JSON (${error instanceof Error ? error.message : error})`);
    }
    if (json === undefined) bad(`tasks[${n}]`, "cannot be serialised to JSON (undefined or a function)");
    const body = `{"i":${n},"p":${json}}`;
    if (Buffer.byteLength(body) > limit) {
      bad(`tasks[${n}]`, `is ${Buffer.byteLength(body)} bytes; the server's max payload allows ${limit}`);
    }
    bodies[n] = body;
  }
  const id = jobIdFor(key);
  const record: JobRecord = {
    v: 1,
    id,
    queue: queue as string,
    status: "queuing",
    phase: SubmitPhase.submitting,
    total: tasks.length,
    submitId: randomUUID().slice(0, 8),
    ...(key === undefined ? {} : { idempotencyKey: key }),
    settings,
    counts: { done: 0, failed: 0, dead: 0 },
    createdAt: now,
    updatedAt: now,
    // Generous for big jobs: ~20k tasks/s publish plus a fixed margin.
    commitDeadline: now + 30_000 + Math.ceil(tasks.length / 5),
  };
  return { record, bodies };
};
