import { Schema } from "effect";
import type { AgentRecord } from "./agent-record.ts";
import { decode } from "./decode.ts";

/**
 * What a live worker says of itself (`rt.workers.list()`). Each worker
 * rewrites it every third of `presenceMs`; a worker whose last word is older
 * than that is gone, whether it stopped or its process died: presence is a
 * time to live, not a goodbye.
 */
export interface WorkerInfo {
  readonly id: string;
  /** The name of the runtime it runs in (`RuntimeOptions.name`). */
  readonly runtime: string;
  readonly queue: string;
  readonly concurrency: number;
  readonly inFlight: number;
  /** Tasks answered with a result since the worker started. */
  readonly processed: number;
  /** Tasks whose handler failed since the worker started (retried ones included). */
  readonly failed: number;
  /** The agent it is bound to. */
  readonly agent?: string;
  /** That agent's current target, as this worker last saw it. */
  readonly target?: string;
  /** The jetstate-jobs version it runs. */
  readonly version: string;
  readonly host: string;
  readonly pid: number;
  /** Epoch ms. */
  readonly startedAt: number;
  /** Epoch ms of its last announcement, by its own clock (informative: expiry goes by the store's time). */
  readonly seenAt: number;
  /** How long its announcement stands: gone once `seenAt + presenceMs` has passed. */
  readonly presenceMs: number;
}

/** An agent as `rt.agents.list()` gives it: its stored record, by id. */
export interface AgentInfo extends Omit<AgentRecord, "v"> {
  readonly agentId: string;
}

const count = Schema.Number.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0));

const WorkerInfoShape = Schema.Struct({
  id: Schema.String,
  runtime: Schema.String,
  queue: Schema.String,
  concurrency: count,
  inFlight: count,
  processed: count,
  failed: count,
  agent: Schema.optionalKey(Schema.String),
  target: Schema.optionalKey(Schema.String),
  version: Schema.String,
  host: Schema.String,
  pid: count,
  startedAt: Schema.Number,
  seenAt: Schema.Number,
  presenceMs: count,
} satisfies Record<keyof WorkerInfo, Schema.Top>);

/**
 * An announcement as read from the store, or undefined when it is not one
 * (written by something else, or by a later version in a shape this one
 * cannot read): a list skips what it cannot read rather than fail on it.
 */
export const parseWorkerInfo = (text: string): WorkerInfo | undefined => {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const decoded = decode(WorkerInfoShape, value, "", { open: true });
  return decoded.ok ? decoded.value : undefined;
};

/**
 * Still standing at `now`: its last announcement, stored at `storedAt` by the
 * store's clock, has not run out. Not `seenAt`, the announcing host's own
 * clock: two hosts' skew would hide a live worker or keep a dead one; the
 * store's time leaves only the reader's skew to the server (`doctor` shows it).
 */
export const isPresent = (info: WorkerInfo, storedAt: number, now: number): boolean =>
  now < storedAt + info.presenceMs;

/** Live workers first by queue, then by runtime and id: a stable order for people and for diffs. */
export const byQueue = (a: WorkerInfo, b: WorkerInfo): number =>
  a.queue.localeCompare(b.queue) || a.runtime.localeCompare(b.runtime) || a.id.localeCompare(b.id);
