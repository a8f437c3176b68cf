import { InvalidArgument } from "./errors.ts";
import { check, maxTimerMs, number } from "./validation.ts";

/**
 * Delayed tasks: the times a submit asks for, checked and turned into each
 * task's due time (ms since epoch), and the rules that follow from them.
 */

/** The furthest ahead a task may be due: a year and a day. Anything later is taken for a mistake. */
export const maxDelayMs = 366 * 24 * 3600_000;

/** How long the mover waits before looking again at a held task whose submit is not committed yet. */
export const uncommittedRetryMs = 200;

const DelayMs = number(0, maxDelayMs);
/** A time as ms since epoch: finite and not before 1970 (a negative epoch is a bug, not a wish). */
const EpochMs = number(0, 8.64e15);

/** A time the user gave (a `Date` or ms since epoch) as ms since epoch; past times run now. */
const checkTime = (value: unknown, field: string, now: number): number => {
  const ms = value instanceof Date ? value.getTime() : value;
  if (value instanceof Date && Number.isNaN(ms)) bad(field, "is an invalid Date");
  const at = check(EpochMs, ms, field);
  if (at > now + maxDelayMs) bad(field, `is more than ${maxDelayMs / 86_400_000} days ahead`);
  return at;
};

const bad = (field: string, message: string): never => {
  throw new InvalidArgument({ message: `${field}: ${message}`, field });
};

/** What a submit asked for, as given: `delayMs` or `runAt` for the job, `taskRunAt` per task. */
export interface RequestedTimes {
  readonly delayMs?: unknown;
  readonly runAt?: unknown;
  readonly taskRunAt?: unknown;
}

export interface DueTimes {
  /** Each task's due time; undefined: the job has no delayed task at all. */
  readonly dueAt: readonly number[] | undefined;
  /**
   * The times as asked (`delayMs` as a delay, not as the time it gives), for the
   * submit's idempotency digest: the same request a second later is the same request.
   */
  readonly asked: string | undefined;
}

/**
 * Each task's due time from the request: `taskRunAt[n]` if given (null or
 * undefined: the job's time), else `runAt`, else now + `delayMs`. A time in
 * the past is due now; NaN, a negative delay, an invalid Date or one more
 * than a year ahead is an `InvalidArgument` naming the field.
 */
export const dueTimes = (request: RequestedTimes, total: number, now: number): DueTimes => {
  const { delayMs, runAt, taskRunAt } = request;
  if (delayMs === undefined && runAt === undefined && taskRunAt === undefined)
    return { dueAt: undefined, asked: undefined };
  if (delayMs !== undefined && runAt !== undefined) bad("runAt", "give runAt or delayMs, not both");
  const delay = delayMs === undefined ? undefined : check(DelayMs, delayMs, "delayMs");
  const jobAt = runAt === undefined ? undefined : checkTime(runAt, "runAt", now);
  const base = jobAt ?? now + (delay ?? 0);
  let perTask: (number | null)[] | undefined;
  if (taskRunAt !== undefined) {
    if (!Array.isArray(taskRunAt) || taskRunAt.length !== total)
      bad("taskRunAt", `must be a list of ${total} times (one per task; null: the job's time)`);
    perTask = (taskRunAt as unknown[]).map((at, n) =>
      at === null || at === undefined ? null : checkTime(at, `taskRunAt[${n}]`, now),
    );
  }
  const dueAt = new Array<number>(total);
  for (let n = 0; n < total; n++) dueAt[n] = perTask?.[n] ?? base;
  const asked = JSON.stringify({ delayMs: delay ?? null, runAt: jobAt ?? null, taskRunAt: perTask ?? null });
  return { dueAt, asked };
};

/** Which tasks are held (due after `now`) and the first and last of their due times. */
export const heldSpan = (
  dueAt: readonly number[] | undefined,
  now: number,
): { readonly held: number; readonly runAt: number; readonly dueUntil: number } | undefined => {
  if (!dueAt) return undefined;
  let held = 0;
  let runAt = Number.POSITIVE_INFINITY;
  let dueUntil = 0;
  for (const at of dueAt) {
    if (at <= now) continue;
    held++;
    runAt = Math.min(runAt, at);
    dueUntil = Math.max(dueUntil, at);
  }
  return held === 0 ? undefined : { held, runAt, dueUntil };
};

/**
 * The message id a held task is published with once due: the submit
 * attempt's prefix (`<jobId>.<submitId>.`) and `d<index>`, never the same as
 * an id of a task published at once (`<jobId>.<submitId>.<n>`). A mover that
 * dies between its publish and its ack publishes again with the same id.
 */
export const heldMsgId = (jobId: string, submitId: string, index: number): string =>
  `${jobId}.${submitId}.d${index}`;

/** Whether a held task belongs to this submit attempt of its job (not one rolled back before it). */
export const isOfAttempt = (msgId: string, record: { id: string; submitId: string }): boolean =>
  msgId.startsWith(`${record.id}.${record.submitId}.d`);

/**
 * The nak delay for a held task not due yet: what is left, at most what a
 * timer can wait (a longer nak would come back at once on the memory broker;
 * the task is simply looked at again then).
 */
export const waitFor = (dueAt: number, now: number): number => Math.min(maxTimerMs, Math.max(1, dueAt - now));

/**
 * The stall rule of a delayed job: no progress is expected of tasks not due
 * yet, so the stall clock starts at the latest of the last progress and the
 * last due time already passed. The record keeps the first and last due
 * times only, so before the last one the clock is held at `now`: a job whose
 * held tasks are due over a week cannot stall during that week. After the
 * last due time, the clock starts at it.
 */
export const stallClockFrom = (lastProgressAt: number, dueUntil: number | undefined, now: number): number =>
  dueUntil === undefined ? lastProgressAt : Math.max(lastProgressAt, Math.min(now, dueUntil));

/**
 * A submit request with its times as ms since epoch: a request kept in a
 * store (a flow's node) is JSON, where a `Date` comes back a string that a
 * later submit of it refuses. Called once the request is checked (an
 * invalid `Date` is refused before).
 */
export const timesAsMs = <
  T extends { readonly runAt?: Date | number; readonly taskRunAt?: readonly (Date | number | null)[] },
>(
  request: T,
): T => ({
  ...request,
  ...(request.runAt instanceof Date ? { runAt: request.runAt.getTime() } : {}),
  ...(request.taskRunAt?.some((t) => t instanceof Date)
    ? { taskRunAt: request.taskRunAt.map((t) => (t instanceof Date ? t.getTime() : t)) }
    : {}),
});
