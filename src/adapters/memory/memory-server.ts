import { setMaxListeners } from "node:events";
import { type Clock, realClock } from "../../kernel/clock.ts";
import { InvalidArgument, PermanentBrokerError, RuntimeStopped } from "../../kernel/errors.ts";
import { laneAckWaitMs, laneMaxDeliver } from "../../kernel/job-record.ts";
import { tokenChars } from "../../kernel/validation.ts";
import { type BrokerNames, brokerNames, dueConsumer, laneConsumer } from "../names.ts";
import { memoryAgentStore } from "./memory-agent-store.ts";
import type { MemoryConsumer } from "./memory-consumer.ts";
import { MemoryKv } from "./memory-kv.ts";
import { MemoryPermitPool, MemoryTargetPools } from "./memory-queue-controls.ts";
import { MessageLog } from "./message-log.ts";
import { TaskStream } from "./task-stream.ts";

export interface MemoryServerOptions {
  /** Drives leases, nak delays, duplicate windows and retention (default: the real clock). */
  readonly clock?: Clock;
  /** Largest message accepted, in bytes, headers included (default 1 MiB, nats-server's default). */
  readonly maxPayload?: number;
  /** First token of every name (default `jetstate`), as the runtime's `prefix` on NATS. */
  readonly prefix?: string;
  /** How long results and dead letters are kept (default 7 days). */
  readonly retentionMs?: number;
}

const subjectToken = /^[^\s.*>]+$/;
const consumerName = /^[^\s.*>/\\]+$/;

/** A subject token (queue, job id) or a consumer name that NATS would refuse: a permanent error, as there. */
export const checkToken = (operation: string, field: string, value: string, consumer = false): string => {
  if (typeof value !== "string" || !(consumer ? consumerName : subjectToken).test(value)) {
    throw new PermanentBrokerError({
      message: `${operation}: ${field} ${JSON.stringify(value)} is not a valid ${consumer ? "consumer name" : "subject token"}`,
      operation,
    });
  }
  return value;
};

/**
 * A memory server as users hold it (`jetstate-jobs/testing`): made by
 * `createMemoryServer()`, passed to `createMemoryBroker({ server })` to give
 * several brokers the same jobs, like runtimes connected to one NATS server.
 */
export interface MemoryServer {
  readonly clock: Clock;
  readonly maxPayload: number;
  readonly prefix: string;
  readonly retentionMs: number;
  /** Clears every timer and ends every waiting reader; operations fail with `RuntimeStopped` from now on. */
  close(): void;
}

/**
 * What a nats-server holds for jetstate, in memory: the job records and
 * supervision leases (KV buckets), the tasks stream with its consumers, the
 * results and dead-letter streams, captured advisories. Internal: users hold
 * it as a `MemoryServer`.
 */
/**
 * A queue's lane consumer: one stream holds every queue's tasks here, so its
 * name says the queue (`lane.<queue>`; a job id has no dot, and is never `lane`).
 */
export const memoryLaneName = (queue: string): string => `${laneConsumer}.${queue}`;

export class MemoryServerState implements MemoryServer {
  readonly clock: Clock;
  readonly maxPayload: number;
  readonly prefix: string;
  readonly retentionMs: number;
  readonly names: BrokerNames;
  /** Job records, each write stamped by the server's clock, as NATS stamps a stored message. */
  readonly records = new MemoryKv(
    (key) => `job record ${key}`,
    () => this.clock.now(),
  );
  /** Supervision leases, each write stamped by the server's clock, as NATS stamps a stored message. */
  readonly leases = new MemoryKv(
    (key) => `lease ${key}`,
    () => this.clock.now(),
  );
  readonly presence = new MemoryKv((key) => `presence ${key}`);
  /** Each queue's controls (`rt.queues`) and its pools of permits, shared by every runtime on this server. */
  readonly queues = new MemoryKv((key) => `queue ${key}`);
  readonly #permitPools = new Map<string, MemoryPermitPool>();
  readonly flows = new MemoryKv((key) => `flow record ${key}`);
  /**
   * Recurring jobs (`rt.schedules`): shared by every runtime on this server, as a KV bucket is,
   * each write stamped by the server's clock, as NATS stamps a stored message.
   */
  readonly schedules = new MemoryKv(
    (key) => `schedule ${key}`,
    () => this.clock.now(),
  );
  /** Agents' records: shared by every runtime on this server, as a KV bucket is. */
  readonly agents = memoryAgentStore();
  readonly tasks: TaskStream;
  /** Tasks held until due, a consumer per queue (the NATS broker's delayed stream per queue). */
  readonly delayed: TaskStream;
  readonly results: MessageLog;
  readonly deadLetters: MessageLog;
  readonly #closing = new AbortController();

  constructor(options: MemoryServerOptions = {}) {
    if (typeof options !== "object" || options === null) bad("options", "must be an object");
    for (const key of Object.keys(options)) {
      if (!["clock", "maxPayload", "prefix", "retentionMs"].includes(key)) bad(key, "unknown option");
    }
    const clock = options.clock ?? realClock;
    if (typeof clock?.now !== "function" || typeof clock.setTimeout !== "function") {
      bad("clock", "must be a Clock (now, setTimeout, clearTimeout)");
    }
    this.clock = clock;
    this.maxPayload = positiveInteger(options.maxPayload, "maxPayload", 1024 * 1024);
    this.retentionMs = positiveInteger(options.retentionMs, "retentionMs", 7 * 24 * 3600_000);
    this.prefix = options.prefix ?? "jetstate";
    if (typeof this.prefix !== "string" || !new RegExp(`^[${tokenChars}]+$`).test(this.prefix)) {
      bad("prefix", "must be a subject token (letters, digits, _ and -)");
    }
    this.names = brokerNames(this.prefix);
    this.tasks = new TaskStream(clock);
    this.delayed = new TaskStream(clock);
    this.results = new MessageLog(clock, this.retentionMs);
    this.deadLetters = new MessageLog(clock, this.retentionMs);
    setMaxListeners(0, this.#closing.signal);
  }

  /** Aborted once the server is closed. */
  get closed(): AbortSignal {
    return this.#closing.signal;
  }

  /** Throws `RuntimeStopped` once closed, as operations on a stopped runtime do. */
  assertOpen(operation: string): void {
    if (this.#closing.signal.aborted) throw new RuntimeStopped({ message: `${operation}: broker closed` });
  }

  /**
   * The queue's lane consumer, made when first needed and never deleted:
   * every lane job's task, with the lane's ack wait and delivery limit.
   */
  lane(queue: string): MemoryConsumer {
    const name = memoryLaneName(queue);
    return (
      this.tasks.consumer(name) ??
      this.tasks.putConsumer(name, this.names.laneFilter(queue), {
        ackWaitMs: laneAckWaitMs,
        maxDeliver: laneMaxDeliver,
      })
    );
  }

  /**
   * The queue's `due` consumer, pulled by the movers following the queue:
   * unlimited deliveries, as on NATS, and only that queue's held tasks.
   */
  due(queue: string): MemoryConsumer {
    const name = `${dueConsumer}.${queue}`;
    return (
      this.delayed.consumer(name) ??
      this.delayed.putConsumer(name, `${this.prefix}.delayed.${queue}.>`, {
        ackWaitMs: 30_000,
        maxDeliver: -1,
      })
    );
  }

  #targetPools: MemoryTargetPools | undefined;
  /** Each queue's pools per agent target, made on first use. */
  get targetPools(): MemoryTargetPools {
    this.#targetPools ??= new MemoryTargetPools(this.clock);
    return this.#targetPools;
  }

  /** The queue's pool of permits of `kind`, empty until set. */
  permitPool(queue: string, kind: "concurrency" | "rate"): MemoryPermitPool {
    const key = `${kind}.${queue}`;
    let pool = this.#permitPools.get(key);
    if (!pool) {
      pool = new MemoryPermitPool(this.clock);
      this.#permitPools.set(key, pool);
    }
    return pool;
  }

  /** A message over `maxPayload` fails before it is stored, as nats.js refuses it before sending. */
  checkPayload(operation: string, body: string, msgId: string): void {
    const bytes = Buffer.byteLength(body) + Buffer.byteLength(`NATS/1.0\r\nNats-Msg-Id: ${msgId}\r\n\r\n`);
    if (bytes > this.maxPayload) {
      throw new PermanentBrokerError({
        message: `${operation}: 'payload' max_payload size exceeded`,
        operation,
      });
    }
  }

  /** Clears every timer and ends every waiting reader; operations fail with `RuntimeStopped` from now on. */
  close(): void {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort();
    this.tasks.close();
    this.delayed.close();
  }
}

/** A server of its own for a test or an embedded runtime; share it to give several brokers the same jobs. */
export const createMemoryServer = (options: MemoryServerOptions = {}): MemoryServer =>
  new MemoryServerState(options);

/** The state behind a server made by `createMemoryServer()` (the memory broker, tests); throws for anything else. */
export const memoryServerState = (server: MemoryServer): MemoryServerState => {
  if (!(server instanceof MemoryServerState))
    throw new InvalidArgument({ message: "server: must be made by createMemoryServer()", field: "server" });
  return server;
};

const bad = (field: string, message: string): never => {
  throw new InvalidArgument({ message: `${field}: ${message}`, field });
};

const positiveInteger = (value: unknown, field: string, fallback: number): number => {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    return bad(field, "must be an integer ≥ 1");
  }
  return value;
};
