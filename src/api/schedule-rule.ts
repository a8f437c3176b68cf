import { Cron } from "croner";
import { Schema } from "effect";
import { plannedTasks, planSubmit } from "../effects/plan-submit.ts";
import { InvalidArgument } from "../kernel/errors.ts";
import type { Queue } from "../kernel/queue.ts";
import {
  EveryMs,
  type MissedTicks,
  type ScheduledJob,
  type ScheduleRule,
} from "../kernel/schedule-record.ts";
import { check, rejectUnknownKeys } from "../kernel/validation.ts";

/**
 * A schedule's rule as ticks (epoch ms): the one place that reads cron
 * expressions (croner) and periods. Every runtime computes the same ticks
 * from the same stored rule, so the same tick names the same job everywhere.
 */

/** A schedule id is a KV key and part of every tick's idempotency key. */
const ScheduleId = Schema.String.check(
  Schema.isMinLength(1, { message: "must not be empty" }),
  Schema.isMaxLength(128, { message: "is too long (1–128 of A–Z a–z 0–9 _ - = and inner dots)" }),
  Schema.isPattern(/^[-=\w]+(?:\.[-=\w]+)*$/, {
    message: "must be 1–128 of A–Z a–z 0–9 _ - = and single dots, not at either end",
  }),
);
const Missed = Schema.Literals(["skip", "runOnce"]);

/** What `rt.schedules.upsert` takes. */
export interface ScheduleRequest {
  /** The schedule's name: 1–128 of letters, digits, `_ - =` and single dots. */
  readonly id: string;
  /** A cron expression (5 fields, or 6 with seconds first), read in `timezone`. Give it or `everyMs`. */
  readonly cron?: string;
  /** Every this many ms (≥ 100), ticks at multiples of it since the epoch. Give it or `cron`. */
  readonly everyMs?: number;
  /**
   * The IANA time zone of `cron` (e.g. `Europe/Berlin`).
   * @defaultValue `UTC`
   */
  readonly timezone?: string;
  /**
   * Ticks that fell while no runtime ran: `skip` them, or fire the latest once (`runOnce`).
   * @defaultValue `skip`
   */
  readonly missed?: MissedTicks;
  /**
   * The job each tick submits: what `rt.jobs.submit` takes, without `idempotencyKey` (the tick's).
   * A queue made with `defineQueue` checks the tasks once, here: its schema's output is stored, and
   * every tick submits it by the queue's name.
   */
  readonly job: Omit<ScheduledJob, "queue"> & { readonly queue: string | Queue<unknown, unknown> };
}

export interface CheckedSchedule {
  readonly id: string;
  readonly rule: ScheduleRule;
  readonly missed: MissedTicks;
  readonly job: ScheduledJob;
}

const bad = (field: string, message: string): never => {
  throw new InvalidArgument({ field, message: `${field}: ${message}` });
};

const cronOf = (rule: { cron: string; timezone?: string }): Cron =>
  new Cron(rule.cron, { paused: true, timezone: rule.timezone ?? "UTC" });

const checkTimezone = (timezone: unknown): string => {
  if (typeof timezone !== "string" || timezone === "") return bad("timezone", "must be an IANA time zone");
  try {
    // Its IANA name as Intl spells it ("utc" is "UTC"): two spellings of one zone are one rule.
    return new Intl.DateTimeFormat("en", { timeZone: timezone }).resolvedOptions().timeZone;
  } catch {
    return bad(
      "timezone",
      `unknown time zone ${JSON.stringify(timezone)} (an IANA name, e.g. Europe/Berlin)`,
    );
  }
};

/**
 * A cron of 5 fields (minute hour day month weekday) or 6 (seconds first), or a nickname
 * (`@daily`); croner also reads a date (one tick) and a seventh field (a year), which are
 * not the crons a schedule takes.
 */
const checkCronShape = (cron: string): void => {
  const fields = cron.trim().split(/\s+/).length;
  if (!cron.trim().startsWith("@") && fields !== 5 && fields !== 6)
    bad("cron", `must have 5 fields (minute hour day month weekday) or 6 (seconds first), not ${fields}`);
};

const checkRule = (request: ScheduleRequest): ScheduleRule => {
  const hasCron = request.cron !== undefined;
  if (hasCron === (request.everyMs !== undefined)) return bad("cron", "give either cron or everyMs (one)");
  if (!hasCron) {
    if (request.timezone !== undefined) bad("timezone", "only with cron");
    return { everyMs: check(EveryMs, request.everyMs, "everyMs") };
  }
  if (typeof request.cron !== "string") return bad("cron", "must be a cron expression");
  checkCronShape(request.cron);
  const rule = {
    cron: request.cron,
    ...(request.timezone === undefined ? {} : { timezone: checkTimezone(request.timezone) }),
  };
  try {
    if (cronOf(rule).nextRun(new Date()) === null) bad("cron", "never ticks");
  } catch (error) {
    if (error instanceof InvalidArgument) throw error;
    bad("cron", error instanceof Error ? error.message : String(error));
  }
  return rule;
};

/**
 * Checks an upsert completely, the job as `rt.jobs.submit` would (every
 * setting, every task against the queue's schema, the sizes): a bad request
 * is an `InvalidArgument` naming the field (`job.tasks[2]`), and nothing is
 * stored. The queue is kept by name: a schema cannot be stored.
 */
export const checkScheduleRequest = async (
  request: unknown,
  maxPayload: number,
  now: number,
): Promise<CheckedSchedule> => {
  if (typeof request !== "object" || request === null) return bad("request", "must be an object");
  rejectUnknownKeys(request, ["id", "cron", "everyMs", "timezone", "missed", "job"], "");
  const given = request as ScheduleRequest;
  const id = check(ScheduleId, given.id, "id");
  const rule = checkRule(given);
  const missed = given.missed === undefined ? "skip" : check(Missed, given.missed, "missed");
  const job = given.job as unknown;
  if (typeof job !== "object" || job === null) return bad("job", "must be a submit request");
  if ("idempotencyKey" in job)
    bad("job.idempotencyKey", "is the tick's (schedule:<id>:<tick>): leave it out");
  // A time of its own would be the same instant for every tick (and a Date stored comes back
  // a string, which each tick's submit would refuse).
  for (const field of ["runAt", "taskRunAt"])
    if (field in job) bad(`job.${field}`, "a tick's job runs at its tick: leave it out");
  try {
    const plan = await planSubmit(
      { ...(job as ScheduledJob), idempotencyKey: tickKeyProbe(id) },
      maxPayload,
      now,
    );
    const { queue: _queue, ...rest } = job as ScheduledJob;
    // The tasks as the queue's schema made them: each tick submits by the queue's name.
    const checked = {
      id,
      rule,
      missed,
      job: { ...rest, queue: plan.record.queue, tasks: plannedTasks(plan) },
    };
    fitsRecord(checked, maxPayload);
    return checked;
  } catch (error) {
    if (!(error instanceof InvalidArgument)) throw error;
    const field = `job.${error.field ?? ""}`.replace(/\.$/, "");
    throw new InvalidArgument({ field, message: `job.${error.message}` });
  }
};

/** The largest time a schedule record holds (epoch ms, year 2286): its digits are the record's longest. */
const longestTime = 9_999_999_999_999;

/** Room for the headers of a record's write (a compare-and-set's expected revision). */
const writeHeadersBytes = 128;

/**
 * The schedule's record, as every later write makes it (its times and its
 * `lastTick` set), must fit one message: a record that fits only without its
 * `lastTick` is stored, then no tick can be recorded (each tick's job runs,
 * and the scheduler's cursor never moves).
 */
const fitsRecord = (checked: CheckedSchedule, maxPayload: number) => {
  const t = longestTime;
  const largest = { v: 1, ...checked, since: t, lastTick: t, createdAt: t, updatedAt: t };
  const size = Buffer.byteLength(JSON.stringify(largest)) + writeHeadersBytes;
  if (size > maxPayload)
    bad(
      "tasks",
      `the schedule's record (every task in it) would be ${size} bytes; the server's max payload allows ${maxPayload}: ` +
        "pass references to large inputs instead of the data",
    );
};

/** The longest key a tick of `id` gets: checked once at upsert, so no tick's key is refused later. */
const tickKeyProbe = (id: string): string => `schedule:${id}:${new Date(0).toISOString()}`;

/** The first tick after `after`; undefined if the rule never ticks again. */
export const nextTick = (rule: ScheduleRule, after: number): number | undefined => {
  if ("everyMs" in rule) return (Math.floor(after / rule.everyMs) + 1) * rule.everyMs;
  return cronOf(rule).nextRun(new Date(after))?.getTime();
};

/** The ticks in (after, upTo], oldest first, at most the latest `limit` of them. */
export const ticksBetween = (rule: ScheduleRule, after: number, upTo: number, limit: number): number[] => {
  if (upTo <= after || limit <= 0) return [];
  if ("everyMs" in rule) {
    const last = Math.floor(upTo / rule.everyMs);
    const first = Math.max(Math.floor(after / rule.everyMs) + 1, last - limit + 1);
    const ticks: number[] = [];
    for (let n = first; n <= last; n++) ticks.push(n * rule.everyMs);
    return ticks;
  }
  // croner's previousRuns is strictly before its reference: +1 ms takes in a tick at upTo.
  return cronOf(rule)
    .previousRuns(limit, new Date(upTo + 1))
    .map((d) => d.getTime())
    .filter((t) => t > after)
    .reverse();
};
