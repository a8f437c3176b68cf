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
  /**
   * Limits per agent target, across every worker bound to an agent whose
   * current target is that one (each target its own pools).
   */
  readonly perTarget?: PerTargetSettings;
  /**
   * How long a permit of the queue's pools stays its holder's with no word
   * from it (absent: `defaultPermitLeaseMs`). The holder renews it three
   * times a lease while its handler runs; a handler that holds the event
   * loop for longer than about two thirds of it loses its permit to the
   * next task (one more than `maxConcurrency` then runs). A crashed
   * holder's permit comes back after it.
   */
  readonly permitLeaseMs?: number;
  /** When it was last written (epoch ms, the writer's clock). */
  readonly updatedAt: number;
}

/** The per-target limits, and the round that names their pools (a new one at each change of the limits). */
export interface PerTargetSettings {
  readonly ratePerSecond?: number;
  readonly maxConcurrency?: number;
  readonly round: string;
}

/**
 * Which `configure()` last rewrote each of the queue's pools: its round, kept
 * in the record beside the limits and not part of `QueueSettings`. A writer
 * whose round is no longer the record's takes its permits back, so that the
 * pool ends as the last record's writer made it (api/queues.ts).
 */
export interface PoolRounds {
  readonly concurrency?: string;
  readonly rate?: string;
}

/** What `configure()` takes for the per-target limits: a number sets one, `null` lifts it, absent keeps it. */
export interface PerTargetLimits {
  readonly ratePerSecond?: number | null;
  readonly maxConcurrency?: number | null;
}

/** What `rt.queues.configure()` takes: a number sets a limit, `null` lifts it, absent keeps it. */
export interface QueueLimits {
  readonly ratePerSecond?: number | null;
  readonly maxConcurrency?: number | null;
  /** Limits per agent target (`null` lifts both). */
  readonly perTarget?: PerTargetLimits | null;
  /**
   * The permits' lease in ms, 5,000 to 3,600,000 (`null`: back to the
   * default, 5,000): longer for handlers that hold the event loop (a
   * synchronous model run), at the price of a crashed worker's permit
   * coming back that much later. A change replaces the pools, as a limit's
   * does.
   * @defaultValue 5000
   */
  readonly permitLeaseMs?: number | null;
}

/** A permit's lease when the settings name none. */
export const defaultPermitLeaseMs = 5000;

/** The lease of the permits of a queue with `settings`. */
export const permitLeaseOf = (settings: Pick<QueueSettings, "permitLeaseMs">): number =>
  settings.permitLeaseMs ?? defaultPermitLeaseMs;

/** The largest limit: each unit is one permit message in the permits stream. */
const maxQueueLimit = 10_000;

const Limit = number(1, maxQueueLimit, { integer: true });
const LimitInput = Schema.Union([Limit, Schema.Null]);
// Never shorter than the default: holders renew their permits at the default lease's pace, whatever the queue's.
const PermitLease = number(defaultPermitLeaseMs, 3_600_000, { integer: true });

const PerTargetInput = Schema.Struct({
  ratePerSecond: Schema.optional(LimitInput),
  maxConcurrency: Schema.optional(LimitInput),
});

const LimitsInput = Schema.Struct({
  ratePerSecond: Schema.optional(LimitInput),
  maxConcurrency: Schema.optional(LimitInput),
  perTarget: Schema.optional(Schema.Union([PerTargetInput, Schema.Null])),
  permitLeaseMs: Schema.optional(Schema.Union([PermitLease, Schema.Null])),
});

const StoredPerTarget = Schema.Struct({
  ratePerSecond: Schema.optional(Limit),
  maxConcurrency: Schema.optional(Limit),
  round: Schema.String,
});

const StoredPoolRounds = Schema.Struct({
  concurrency: Schema.optional(Schema.String),
  rate: Schema.optional(Schema.String),
});

// `pools` came after the first release of version 1: a record without it reads as before, and a
// reader of that release passes over it (records are decoded open).
const StoredSettings = Schema.Struct({
  v: Schema.Literal(1),
  paused: Schema.Boolean,
  ratePerSecond: Schema.optional(Limit),
  maxConcurrency: Schema.optional(Limit),
  perTarget: Schema.optional(StoredPerTarget),
  // Read leniently: a lease out of this version's range (a later one's, or written by hand) is
  // the default, not a record unread, which would drop the pause and the limits with it.
  permitLeaseMs: Schema.optional(Schema.Unknown),
  pools: Schema.optional(StoredPoolRounds),
  updatedAt: Schema.Number,
});

/** Checks a queue name for `rt.queues`. */
export const checkQueueName = (queue: unknown): string => check(SubjectToken, queue, "queue");

/** Checks `configure()`'s limits; unknown keys, non-integers and out-of-range values are refused. */
export const checkQueueLimits = (limits: unknown): QueueLimits => {
  if (typeof limits !== "object" || limits === null || Array.isArray(limits))
    throw new InvalidArgument({ field: "limits", message: "limits: must be an object" });
  rejectUnknownKeys(limits, ["ratePerSecond", "maxConcurrency", "perTarget", "permitLeaseMs"], "limits");
  const perTarget = (limits as { perTarget?: unknown }).perTarget;
  if (typeof perTarget === "object" && perTarget !== null && !Array.isArray(perTarget))
    rejectUnknownKeys(perTarget, ["ratePerSecond", "maxConcurrency"], "limits.perTarget");
  return check(LimitsInput, limits, "limits");
};

/** A queue never configured: running, no limits. */
export const openQueue = (queue: string, updatedAt = 0): QueueSettings => ({
  queue,
  paused: false,
  updatedAt,
});

/** A value after a change: absent keeps it, null lifts it, a number sets it. */
const changed = (was: number | undefined, to: number | null | undefined) => (to === undefined ? was : to);

/**
 * The per-target limits after `limits`; `round` names their pools when they
 * change (the pools of the old round are dropped), else the old round stays.
 */
const withPerTarget = (
  current: PerTargetSettings | undefined,
  limits: PerTargetLimits | null | undefined,
  round: string,
): PerTargetSettings | undefined => {
  if (limits === undefined) return current;
  const rate = limits === null ? undefined : changed(current?.ratePerSecond, limits.ratePerSecond);
  const cap = limits === null ? undefined : changed(current?.maxConcurrency, limits.maxConcurrency);
  if (rate == null && cap == null) return undefined;
  const same = current && current.ratePerSecond === rate && current.maxConcurrency === cap;
  return {
    ...(rate == null ? {} : { ratePerSecond: rate }),
    ...(cap == null ? {} : { maxConcurrency: cap }),
    round: same ? current.round : round,
  };
};

/** The settings after `limits` (absent keeps, null lifts, a number sets); `round` names new per-target pools. */
export const withLimits = (
  current: QueueSettings,
  limits: QueueLimits,
  now: number,
  round: string,
): QueueSettings => {
  const rate = changed(current.ratePerSecond, limits.ratePerSecond);
  const cap = changed(current.maxConcurrency, limits.maxConcurrency);
  const lease = changed(current.permitLeaseMs, limits.permitLeaseMs) ?? undefined;
  const kept = withPerTarget(current.perTarget, limits.perTarget, round);
  // The target pools' consumers are made with the lease by their first taker: a new lease, new pools.
  const perTarget =
    kept !== undefined && kept.round === current.perTarget?.round && lease !== current.permitLeaseMs
      ? { ...kept, round }
      : kept;
  return {
    queue: current.queue,
    paused: current.paused,
    ...(rate == null ? {} : { ratePerSecond: rate }),
    ...(cap == null ? {} : { maxConcurrency: cap }),
    ...(perTarget === undefined ? {} : { perTarget }),
    ...(lease === undefined ? {} : { permitLeaseMs: lease }),
    updatedAt: now,
  };
};

/** The stored record of `settings`, with the rounds of the writers that last rewrote its pools. */
export const encodeQueueSettings = (settings: QueueSettings, pools?: PoolRounds): string =>
  JSON.stringify({
    v: 1,
    paused: settings.paused,
    ...(settings.ratePerSecond === undefined ? {} : { ratePerSecond: settings.ratePerSecond }),
    ...(settings.maxConcurrency === undefined ? {} : { maxConcurrency: settings.maxConcurrency }),
    ...(settings.perTarget === undefined ? {} : { perTarget: settings.perTarget }),
    ...(settings.permitLeaseMs === undefined ? {} : { permitLeaseMs: settings.permitLeaseMs }),
    ...(pools === undefined ? {} : { pools }),
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
): { settings: QueueSettings; pools?: PoolRounds; readable: boolean } => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { settings: openQueue(queue), readable: false };
  }
  const result = decode(StoredSettings, parsed, "queue settings", { open: true });
  if (!result.ok) return { settings: openQueue(queue), readable: false };
  const { paused, ratePerSecond, maxConcurrency, perTarget, pools, updatedAt } = result.value;
  const lease = decode(PermitLease, result.value.permitLeaseMs, "queue settings");
  const permitLeaseMs = lease.ok ? lease.value : undefined;
  return {
    settings: {
      queue,
      paused,
      ...(ratePerSecond === undefined ? {} : { ratePerSecond }),
      ...(maxConcurrency === undefined ? {} : { maxConcurrency }),
      ...(perTarget === undefined ? {} : { perTarget }),
      ...(permitLeaseMs === undefined ? {} : { permitLeaseMs }),
      updatedAt,
    },
    ...(pools === undefined ? {} : { pools }),
    readable: true,
  };
};
