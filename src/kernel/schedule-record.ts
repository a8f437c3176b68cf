import { Schema } from "effect";
import { decode } from "./decode.ts";
import { PermanentBrokerError } from "./errors.ts";
import { maxTimerMs, number } from "./validation.ts";

/**
 * A recurring job as stored (`<prefix>_schedules`, one key per schedule id):
 * its rule, what to submit at each tick, and the last tick fired. Every
 * runtime with the submitter role reads it and fires its ticks; the job of a
 * tick is named by the idempotency key `schedule:<id>:<tick ISO>`, so every
 * runtime that fires the same tick names the same job.
 */

/** What a schedule does with ticks that fell while no runtime ran: none, or the latest one once. */
export type MissedTicks = "skip" | "runOnce";

/** When a schedule ticks: a cron expression (in `timezone`, UTC by default), or every `everyMs` from the epoch. */
export type ScheduleRule =
  | { readonly cron: string; readonly timezone?: string }
  | { readonly everyMs: number };

/** The job each tick submits: `rt.jobs.submit`'s request with the queue by name and no idempotency key. */
export interface ScheduledJob {
  readonly queue: string;
  readonly tasks: readonly unknown[];
  readonly maxFailures?: number;
  readonly ackWaitMs?: number;
  readonly maxDeliver?: number;
  readonly backoff?: readonly number[];
  readonly stallAfterMs?: number;
  readonly stalledTimeoutMs?: number;
  readonly priority?: number;
  readonly lane?: boolean;
}

const SCHEDULE_RECORD_VERSION = 1;

export interface ScheduleRecord {
  readonly v: typeof SCHEDULE_RECORD_VERSION;
  readonly id: string;
  readonly rule: ScheduleRule;
  readonly missed: MissedTicks;
  readonly job: ScheduledJob;
  /**
   * When this rule was set (epoch ms): its first tick is after it. An upsert
   * that keeps the rule (only the job or the policy changed) keeps it.
   */
  readonly since: number;
  /** The latest tick whose job is committed (epoch ms); it only moves forward. */
  readonly lastTick?: number;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/**
 * The shortest period of an `everyMs` rule (below it a tick's submit, a few round trips, would
 * not be over before the next), and its type: what an upsert checks, a read checks too.
 */
const minEveryMs = 100;
export const EveryMs = number(minEveryMs, maxTimerMs, { integer: true });

const RuleShape = Schema.Union([
  Schema.Struct({ cron: Schema.String, timezone: Schema.optionalKey(Schema.String) }),
  // Checked on read as on upsert: a period of 0 (a record edited by hand) has ticks without end.
  Schema.Struct({ everyMs: EveryMs }),
]);

/** The stored shape; open, so a field a later writer of the same version adds is kept. */
const ScheduleRecordShape = Schema.Struct({
  v: Schema.Literal(SCHEDULE_RECORD_VERSION),
  id: Schema.String,
  rule: RuleShape,
  missed: Schema.Literals(["skip", "runOnce"]),
  job: Schema.Struct({ queue: Schema.String, tasks: Schema.Array(Schema.Unknown) }),
  since: Schema.Number,
  lastTick: Schema.optionalKey(Schema.Number),
  createdAt: Schema.Number,
  updatedAt: Schema.Number,
});

/** Validates a record read from storage; an unknown version fails loudly instead of being misread. */
export const parseScheduleRecord = (id: string, value: unknown): ScheduleRecord => {
  const decoded = decode(ScheduleRecordShape, value, "", { open: true });
  if (decoded.ok) return value as ScheduleRecord;
  const why =
    decoded.field === "v"
      ? `unsupported version ${String((value as { v?: unknown } | null)?.v)}`
      : `${decoded.field || "record"}: ${decoded.message}`;
  throw new PermanentBrokerError({
    operation: "schedules.read",
    message: `schedule record ${id} is unreadable: ${why}`,
  });
};

/** Two rules tick alike (same cron and zone, or same period). */
export const sameRule = (a: ScheduleRule, b: ScheduleRule): boolean =>
  "cron" in a
    ? "cron" in b && a.cron === b.cron && (a.timezone ?? "UTC") === (b.timezone ?? "UTC")
    : "everyMs" in b && a.everyMs === b.everyMs;

const keyPrefix = "schedule:";

/** The idempotency key of a schedule's tick: the job it names is the same from every runtime. */
export const tickKey = (scheduleId: string, tick: number): string =>
  `${keyPrefix}${scheduleId}:${new Date(tick).toISOString()}`;

/** The schedule and tick a job came from, read from its idempotency key; undefined for any other job. */
export const scheduleOfKey = (
  key: string | undefined,
): { readonly scheduleId: string; readonly tick: number } | undefined => {
  if (key === undefined || !key.startsWith(keyPrefix)) return undefined;
  // The tick is the last 24 characters (`2026-01-01T00:00:00.000Z`), after a colon.
  const colon = key.length - 25;
  if (colon <= keyPrefix.length || key[colon] !== ":") return undefined;
  const tick = Date.parse(key.slice(colon + 1));
  return Number.isNaN(tick) ? undefined : { scheduleId: key.slice(keyPrefix.length, colon), tick };
};

/**
 * The schedule and tick a job came from (`jobs ls` shows it), read from its
 * idempotency key; undefined for a job no schedule submitted.
 * @example
 * const from = scheduleOfJob(await rt.jobs.record(id));
 * if (from) log.info({ scheduleId: from.scheduleId, tick: new Date(from.tick) }, "scheduled run");
 */
export const scheduleOfJob = (
  record: { readonly idempotencyKey?: string } | undefined,
): { readonly scheduleId: string; readonly tick: number } | undefined =>
  scheduleOfKey(record?.idempotencyKey);
