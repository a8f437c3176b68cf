import { createHash, randomUUID } from "node:crypto";
import { Schema } from "effect";
import { deadLetterRoomBytes } from "../kernel/dead-letter.ts";
import { IdempotencyConflict, InvalidArgument } from "../kernel/errors.ts";
import { dueTimes, heldMsgId, heldSpan } from "../kernel/held-task.ts";
import {
  fitsLane,
  type JobRecord,
  type JobSettings,
  laneMaxTasksDefault,
  SubmitPhase,
} from "../kernel/job-record.ts";
import { type Queue, validateWith } from "../kernel/queue.ts";
import {
  check,
  checkOr,
  IdempotencyKey,
  maxTimerMs,
  number,
  rejectUnknownKeys,
  SubjectToken,
} from "../kernel/validation.ts";
import { decodeTask, encodeTask, type HeldTaskBody, withSubmit } from "../kernel/wire.ts";

export interface SubmitRequest<Task = unknown, Result = unknown> {
  /** A queue name or a queue made with `defineQueue` (typed, optionally validated). */
  readonly queue: string | Queue<Task, Result>;
  readonly tasks: readonly Task[];
  /**
   * Same key on the same queue with the same tasks and settings → the same
   * job, and no task is published twice; with other tasks or settings →
   * `IdempotencyConflict`. 1–512 characters, no control characters.
   */
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
   * Redelivery delay after a transient error, per attempt; the last repeats
   * (1–100 finite delays ≥ 0).
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
  /**
   * An integer from −100 to 100: workers start the tasks of higher-priority
   * jobs first, while every job keeps at least one start in eight of a busy
   * worker's (the longest-waiting job's turn, `kernel/slots.ts`). Part of what
   * an idempotency key compares.
   * @defaultValue 0
   */
  readonly priority?: number;
  /**
   * Hold every task this long (ms, 0 to a year) before workers may see it.
   * Not with `runAt`.
   * @defaultValue 0: visible at once
   */
  readonly delayMs?: number;
  /**
   * Hold every task until this time (a `Date` or ms since epoch; a time past
   * is now; at most a year ahead). Not with `delayMs`.
   * @defaultValue now
   */
  readonly runAt?: Date | number;
  /**
   * One time per task, in the order of `tasks` (a `Date` or ms since epoch;
   * `null`: the job's time, `runAt` or `delayMs`). A list beside `tasks`,
   * never a field of a task: a payload that is itself `{ payload, runAt }` is
   * just a payload.
   * @defaultValue the job's time for every task
   */
  readonly taskRunAt?: readonly (Date | number | null)[];
  /**
   * `false`: this job gets a consumer of its own even when it fits its
   * queue's lane (at most `jobs.laneMaxTasks` tasks, the default ack wait,
   * deliveries and priority),
   * e.g. for an HTTP worker that reserves from the job (`POST /jobs/{id}/tasks`).
   * `true` asks for the lane where it fits, whatever `jobs.lane` says. Not
   * part of what an idempotency key compares: a resubmit of the key answers
   * the job as it was made.
   * @defaultValue the runtime's `jobs.lane`
   */
  readonly lane?: boolean;
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
  "priority",
  "delayMs",
  "runAt",
  "taskRunAt",
  "lane",
] as const;

export const maxTasksPerJob = 1_000_000;

export interface SubmitPlan {
  readonly record: JobRecord;
  /** One message body per task visible at once (kernel/wire.ts `encodeTask`). */
  readonly bodies: readonly string[];
  /** The tasks held until due: each one's due time, message id and body. */
  readonly held: readonly HeldTaskBody[];
}

const bad = (field: string, message: string): never => {
  throw new InvalidArgument({ message: `${field}: ${message}`, field });
};

/** Submit settings: each checked against its shape, the error naming the field. */
const Settings = {
  maxFailures: number(0, 1),
  ackWaitMs: number(100, maxTimerMs, { integer: true }),
  maxDeliver: number(1, 1_000_000, { integer: true }),
  backoffDelay: number(0, maxTimerMs),
  stallAfterMs: number(1, maxTimerMs, { integer: true }),
  stalledTimeoutMs: number(0, maxTimerMs, { integer: true }),
  priority: number(-100, 100, { integer: true }),
} as const;
const maxBackoffSteps = 100;
const defaultBackoff: readonly number[] = [1000, 5000, 15_000];

const checkBackoff = (value: unknown): readonly number[] => {
  if (value === undefined) return defaultBackoff;
  if (!Array.isArray(value) || value.length === 0 || value.length > maxBackoffSteps) {
    return bad("backoff", `must be a list of 1–${maxBackoffSteps} delays in ms`);
  }
  return value.map((delay, n) => check(Settings.backoffDelay, delay, `backoff[${n}]`));
};

/**
 * A job id that is a valid subject token, KV key and consumer name. With an
 * idempotency key it is derived from the queue and the key, so the same key
 * on two queues names two jobs.
 */
export const jobIdFor = (queue: string, idempotencyKey: string | undefined): string =>
  idempotencyKey === undefined
    ? `j${randomUUID().replaceAll("-", "")}`
    : `k${createHash("sha256").update(`${queue}\n${idempotencyKey}`).digest("base64url").slice(0, 32)}`;

/**
 * The job id an idempotency key named before keys were scoped by queue: jobs
 * an older jetstate submitted are still the jobs their keys name.
 */
export const legacyJobIdFor = (idempotencyKey: string): string =>
  `k${createHash("sha256").update(idempotencyKey).digest("base64url").slice(0, 32)}`;

/** Whether `found` is a committed job an older jetstate submitted for `wanted`'s queue and key. */
export const isLegacyJobFor = (found: JobRecord | undefined, wanted: JobRecord): found is JobRecord =>
  found !== undefined &&
  found.requestDigest === undefined &&
  found.phase === SubmitPhase.committed &&
  found.queue === wanted.queue &&
  found.idempotencyKey !== undefined &&
  found.idempotencyKey === wanted.idempotencyKey;

/** Version of `requestDigest`: bump it when what goes into the digest changes. */
const digestVersion = "v1";

/** What a submit asked for, for comparing two submits with the same idempotency key. */
export const requestDigest = (settings: JobSettings, bodies: readonly string[], times?: string): string => {
  const hash = createHash("sha256").update(JSON.stringify(settings));
  // Only a delayed request adds its times: every digest stored before them stays what it was.
  if (times !== undefined) hash.update("\n").update(times);
  for (const body of bodies) hash.update("\n").update(body);
  return `${digestVersion}:${hash.digest("base64url")}`;
};

/**
 * Throws `IdempotencyConflict` when `found` (the record the key names) was
 * submitted with other tasks or settings than `wanted`. A record from before
 * digests existed, or one rolled back (it will be replaced), matches.
 */
export const assertSameRequest = (found: JobRecord | undefined, wanted: JobRecord): void => {
  if (
    found === undefined ||
    found.phase === SubmitPhase.rolledBack ||
    found.requestDigest === undefined ||
    found.requestDigest === wanted.requestDigest
  )
    return;
  throw new IdempotencyConflict({
    message: `idempotencyKey: ${JSON.stringify(wanted.idempotencyKey)} already names job ${found.id} of queue ${found.queue}, submitted with other tasks or settings`,
    idempotencyKey: wanted.idempotencyKey ?? "",
    queue: found.queue,
    jobId: found.id,
  });
};

/**
 * Checks a submit request completely and encodes its tasks, before anything
 * is written: a bad request fails with `InvalidArgument` naming the field (and
 * the task index), and NATS never sees it.
 */
/** A plan's tasks, in order, as validated: its bodies hold what the queue's schema returned. */
export const plannedTasks = (plan: SubmitPlan): unknown[] => {
  const tasks: unknown[] = [];
  for (const body of [...plan.bodies, ...plan.held.map((h) => h.body)]) {
    const { index, payload } = decodeTask(body);
    tasks[index] = payload;
  }
  return tasks;
};

export const planSubmit = async <Task, Result>(
  request: SubmitRequest<Task, Result>,
  maxPayload: number,
  now: number,
  lane = false,
  laneMaxTasks = laneMaxTasksDefault,
): Promise<SubmitPlan> => {
  if (typeof request !== "object" || request === null) return bad("request", "must be an object");
  rejectUnknownKeys(request, requestKeys, "");
  if (typeof request.queue !== "string" && (typeof request.queue !== "object" || request.queue === null)) {
    return bad("queue", "must be a queue name or a queue made with defineQueue");
  }
  const queue = check(
    SubjectToken,
    typeof request.queue === "string" ? request.queue : request.queue.name,
    "queue",
  );
  const schema = typeof request.queue === "object" ? request.queue.schema?.task : undefined;
  const tasks = request.tasks;
  if (!Array.isArray(tasks)) return bad("tasks", "must be an array");
  if (tasks.length === 0) return bad("tasks", "a job needs at least one task");
  if (tasks.length > maxTasksPerJob) return bad("tasks", `at most ${maxTasksPerJob} tasks per job`);
  const key = checkOr(IdempotencyKey, request.idempotencyKey, "idempotencyKey", undefined);
  const onLane = checkOr(Schema.Boolean, request.lane, "lane", lane);
  let settings: JobSettings = {
    maxFailures: checkOr(Settings.maxFailures, request.maxFailures, "maxFailures", 0),
    ackWaitMs: checkOr(Settings.ackWaitMs, request.ackWaitMs, "ackWaitMs", 30_000),
    maxDeliver: checkOr(Settings.maxDeliver, request.maxDeliver, "maxDeliver", 5),
    backoffMs: checkBackoff(request.backoff),
    stallAfterMs: checkOr(Settings.stallAfterMs, request.stallAfterMs, "stallAfterMs", 60_000),
    stalledTimeoutMs: checkOr(Settings.stalledTimeoutMs, request.stalledTimeoutMs, "stalledTimeoutMs", 0),
  };
  // Stored only when not 0: a priority-0 job's settings, and so its request digest, stay
  // what they were before priorities (a keyed resubmit after an upgrade matches).
  const priority = checkOr(Settings.priority, request.priority, "priority", 0);
  if (priority !== 0) settings = { ...settings, priority };
  const times = dueTimes(request, tasks.length, now);
  const bodies: string[] = new Array(tasks.length);
  // The task must fit, and so must its dead letter (the payload plus its fields, far more
  // than the task's own envelope and message id): a task whose dead letter cannot be
  // stored could never die, and its job would never end.
  const limit = maxPayload - deadLetterRoomBytes;
  for (let n = 0; n < tasks.length; n++) {
    const task = schema ? await validateWith(schema, tasks[n], `tasks[${n}]`) : tasks[n];
    let body = "";
    try {
      body = encodeTask(n, task);
    } catch (error) {
      bad(`tasks[${n}]`, error instanceof Error ? error.message : String(error));
    }
    if (Buffer.byteLength(body) > limit) {
      bad(`tasks[${n}]`, `is ${Buffer.byteLength(body)} bytes; the server's max payload allows ${limit}`);
    }
    bodies[n] = body;
  }
  const id = jobIdFor(queue, key);
  const submitId = randomUUID().slice(0, 8);
  const span = heldSpan(times.dueAt, now);
  const record: JobRecord = {
    v: 1,
    id,
    queue,
    status: "queuing",
    phase: SubmitPhase.submitting,
    total: tasks.length,
    submitId,
    ...(key === undefined
      ? {}
      : { idempotencyKey: key, requestDigest: requestDigest(settings, bodies, times.asked) }),
    settings,
    counts: { done: 0, failed: 0, dead: 0 },
    createdAt: now,
    updatedAt: now,
    // Generous for big jobs: ~20k tasks/s publish plus a fixed margin.
    commitDeadline: now + 30_000 + Math.ceil(tasks.length / 5),
    // A held task is not the lane's commit point: a delayed job has a consumer of its own.
    ...(onLane && !span && fitsLane(tasks.length, settings, laneMaxTasks) ? { lane: true } : {}),
    ...(span ? { runAt: span.runAt, dueUntil: span.dueUntil } : {}),
  };
  // Stamped after the request's digest (the same request, whichever submit) and after the size
  // check: the few bytes added are not in the task's dead letter, which holds its payload. A
  // lane job holds no task (a delayed job has a consumer of its own). Every lane job's tasks name
  // their submit: a 1-task job's too, whose publish may outlive its submit's rollback and land
  // once the next submit of the key holds the record.
  if (record.lane)
    return { record, bodies: bodies.map((body, n) => withSubmit(body, n, submitId)), held: [] };
  if (!span || !times.dueAt) return { record, bodies, held: [] };
  const dueAt = times.dueAt;
  const held: HeldTaskBody[] = [];
  const visible: string[] = [];
  bodies.forEach((body, n) => {
    const at = dueAt[n] ?? now;
    if (at <= now) visible.push(body);
    else held.push({ dueAt: at, msgId: heldMsgId(id, submitId, n), body });
  });
  return { record, bodies: visible, held };
};
