import { randomUUID } from "node:crypto";
import type { Broker } from "../../src/adapters/broker.ts";
import type { LaneLease, TaskLease } from "../../src/adapters/task-queue.ts";
import type { ManualClock } from "../../src/kernel/clock.ts";
import { type JobRecord, type JobSettings, laneAckWaitMs } from "../../src/kernel/job-record.ts";
import { waitUntil } from "../harness/wait.ts";

/** What a contract run needs of one broker implementation. */
export interface BrokerHarness {
  readonly broker: Broker;
  /** Present when the broker runs on a manual clock (memory). */
  readonly clock?: ManualClock;
  /** Lets `ms` of broker time pass: advances the manual clock, or waits in real time. */
  advance(ms: number): Promise<void>;
  /** A second broker on the same backend with its own supervision holder: another runtime. */
  peer(holder: string): Promise<Broker>;
  /** First token of the broker's names (default `jetstate`). */
  readonly prefix?: string;
  /** Writes `text` as the job record of `id`, past the broker (a raw KV put): a record it may not read. */
  writeRawRecord(id: string, text: string): Promise<void>;
  /** The lease of test jobs (default 300 ms; real time on NATS). */
  readonly ackWaitMs?: number;
  /** Stops everything the harness started (loops are aborted before). */
  dispose(): Promise<void>;
}

/** A job as the broker's methods name it: by its queue and id. */
export interface JobRef {
  readonly queue: string;
  readonly id: string;
}

/** A job of a queue of its own that has no record (results, dead letters, progress only). */
export const newJobRef = (): JobRef => ({ queue: uid("q"), id: uid("j") });

export const uid = (prefix: string) => `${prefix}${randomUUID().replaceAll("-", "").slice(0, 12)}`;

/** Task bodies as a submit encodes them: `{"i":n,"p":{"n":n}}`. */
export const taskBodies = (count: number, from = 0) =>
  Array.from({ length: count }, (_, k) => `{"i":${from + k},"p":{"n":${from + k}}}`);

export const indexOf = (lease: TaskLease): number => (JSON.parse(lease.body) as { i: number }).i;

export const newRecord = (
  total: number,
  ackWaitMs: number,
  settings: Partial<JobSettings> = {},
): JobRecord => {
  const now = Date.now();
  return {
    v: 1,
    id: uid("j"),
    queue: uid("q"),
    status: "queuing",
    phase: "submitting",
    total,
    submitId: uid("s"),
    settings: {
      maxFailures: 0,
      ackWaitMs,
      maxDeliver: 5,
      backoffMs: [0],
      stallAfterMs: 60_000,
      stalledTimeoutMs: 0,
      ...settings,
    },
    counts: { done: 0, failed: 0, dead: 0 },
    createdAt: now,
    updatedAt: now,
    commitDeadline: now + 30_000,
  };
};

/** A lane job of one task (the lane's ack wait), on `queue` or a queue of its own. */
export const newLaneRecord = (queue?: string, total = 1): JobRecord => {
  const record = newRecord(total, laneAckWaitMs);
  return { ...record, queue: queue ?? record.queue, lane: true };
};

/** Polls until `check` stops returning false or throwing (an `expect` inside it): never a fixed sleep. */
export const eventually = (check: () => unknown, message = "the expected broker state", timeoutMs = 8000) =>
  waitUntil(async () => (await check()) !== false, { timeoutMs, intervalMs: 10, message });

/** Long-running broker calls a case starts; all aborted after the case. */
export class Loops {
  readonly #controllers = new Set<AbortController>();

  signal(): AbortSignal {
    const controller = new AbortController();
    this.#controllers.add(controller);
    return controller.signal;
  }

  abortAll(): void {
    for (const c of this.#controllers) c.abort();
    this.#controllers.clear();
  }

  /** A worker that records every lease it is handed (and answers none unless told to). */
  consume(broker: Broker, job: JobRef, onTask?: (lease: TaskLease) => void) {
    return this.#worker((take, signal) => broker.consumeTasks(job.queue, job.id, 16, take, signal), onTask);
  }

  /** The same on the queue's lane: each lease names its job. */
  consumeLane(broker: Broker, queue: string, onTask?: (lease: LaneLease) => void) {
    return this.#worker((take, signal) => broker.consumeLane(queue, 16, take, signal), onTask);
  }

  #worker<Lease, End>(
    start: (take: (lease: Lease) => void, signal: AbortSignal) => Promise<End>,
    onTask?: (lease: Lease) => void,
  ) {
    const controller = new AbortController();
    this.#controllers.add(controller);
    const leases: Lease[] = [];
    const ended = start((lease) => {
      leases.push(lease);
      onTask?.(lease);
    }, controller.signal);
    return { leases, ended, stop: () => controller.abort() };
  }

  /** A results reader that records what it is handed, and how often it was told it caught up. */
  read(broker: Broker, job: JobRef) {
    const controller = new AbortController();
    this.#controllers.add(controller);
    const messages: Array<{ body: string; pending: number }> = [];
    const state = { caughtUp: 0 };
    const ended = broker.readResults(
      job.queue,
      job.id,
      (body, pending) => messages.push({ body, pending }),
      controller.signal,
      () => state.caughtUp++,
    );
    return { messages, state, ended, stop: () => controller.abort() };
  }
}
