import { Schema } from "effect";
import { decode } from "./decode.ts";
import { InvalidArgument } from "./errors.ts";
import { check, number, rejectUnknownKeys, SubjectToken } from "./validation.ts";

/**
 * A queue's controls as every process sees them (`rt.queues`): paused or
 * not, and its limits across all workers of all processes. Stored one key
 * per queue, versioned (`v: 1`), written by compare-and-set.
 */
export interface QueueSettings {
  readonly queue: string;
  /** No worker starts a task of the queue while true. */
  readonly paused: boolean;
  /** At most this many tasks start in any one second, across every worker. */
  readonly ratePerSecond?: number;
  /** At most this many handlers run at once, across every worker. */
  readonly maxConcurrency?: number;
  /** When it was last written (epoch ms, the writer's clock). */
  readonly updatedAt: number;
}

/** What `rt.queues.configure()` takes: a number sets a limit, `null` lifts it, absent keeps it. */
export interface QueueLimits {
  readonly ratePerSecond?: number | null;
  readonly maxConcurrency?: number | null;
}

/** The largest limit: each unit is one permit message in the permits stream. */
const maxQueueLimit = 10_000;

const Limit = number(1, maxQueueLimit, { integer: true });
const LimitInput = Schema.Union([Limit, Schema.Null]);

const LimitsInput = Schema.Struct({
  ratePerSecond: Schema.optional(LimitInput),
  maxConcurrency: Schema.optional(LimitInput),
});

const StoredSettings = Schema.Struct({
  v: Schema.Literal(1),
  paused: Schema.Boolean,
  ratePerSecond: Schema.optional(Limit),
  maxConcurrency: Schema.optional(Limit),
  updatedAt: Schema.Number,
});

/** Checks a queue name for `rt.queues`. */
export const checkQueueName = (queue: unknown): string => check(SubjectToken, queue, "queue");

/** Checks `configure()`'s limits; unknown keys, non-integers and out-of-range values are refused. */
export const checkQueueLimits = (limits: unknown): QueueLimits => {
  if (typeof limits !== "object" || limits === null || Array.isArray(limits))
    throw new InvalidArgument({ field: "limits", message: "limits: must be an object" });
  rejectUnknownKeys(limits, ["ratePerSecond", "maxConcurrency"], "limits");
  return check(LimitsInput, limits, "limits");
};

/** A queue never configured: running, no limits. */
export const openQueue = (queue: string, updatedAt = 0): QueueSettings => ({
  queue,
  paused: false,
  updatedAt,
});

/** The settings after `limits` (absent keeps, null lifts, a number sets). */
export const withLimits = (current: QueueSettings, limits: QueueLimits, now: number): QueueSettings => {
  const rate = limits.ratePerSecond === undefined ? current.ratePerSecond : limits.ratePerSecond;
  const cap = limits.maxConcurrency === undefined ? current.maxConcurrency : limits.maxConcurrency;
  return {
    queue: current.queue,
    paused: current.paused,
    ...(rate == null ? {} : { ratePerSecond: rate }),
    ...(cap == null ? {} : { maxConcurrency: cap }),
    updatedAt: now,
  };
};

export const encodeQueueSettings = (settings: QueueSettings): string =>
  JSON.stringify({
    v: 1,
    paused: settings.paused,
    ...(settings.ratePerSecond === undefined ? {} : { ratePerSecond: settings.ratePerSecond }),
    ...(settings.maxConcurrency === undefined ? {} : { maxConcurrency: settings.maxConcurrency }),
    updatedAt: settings.updatedAt,
  });

/**
 * The stored settings of `queue`; a value that is not a version-1 record
 * (written by hand, or by a later version) reads as an open queue, so a
 * worker never stops on a record it cannot read, and says so in the log.
 */
export const decodeQueueSettings = (
  queue: string,
  text: string,
): { settings: QueueSettings; readable: boolean } => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { settings: openQueue(queue), readable: false };
  }
  const result = decode(StoredSettings, parsed, "queue settings", { open: true });
  if (!result.ok) return { settings: openQueue(queue), readable: false };
  const { paused, ratePerSecond, maxConcurrency, updatedAt } = result.value;
  return {
    settings: {
      queue,
      paused,
      ...(ratePerSecond === undefined ? {} : { ratePerSecond }),
      ...(maxConcurrency === undefined ? {} : { maxConcurrency }),
      updatedAt,
    },
    readable: true,
  };
};
