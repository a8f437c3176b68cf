import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import { InvalidArgument, RuntimeStopped } from "../../kernel/errors.ts";
import type { JobRecord, JobSettings, JobTasksRef, SubmitTasksRef } from "../../kernel/job-record.ts";
import type { HeldTaskBody } from "../../kernel/wire.ts";
import type { AgentStore } from "../agent-store.ts";
import type { Broker } from "../broker.ts";
import type {
  BrokerCleanupOptions,
  JobsCleanupReport,
  QueueStats,
  QueueStatsQuery,
} from "../broker-admin.ts";
import type { DeadLetter, TaskMessageRef, UnhandledExhausted } from "../dead-letters.ts";
import type { HeldAnswer, HeldTask } from "../delayed-tasks.ts";
import type { FlowStore } from "../flow-store.ts";
import type { RecordsPage, RecordsPageQuery } from "../job-records.ts";
import type { JobResults } from "../job-results.ts";
import type { Presence } from "../presence.ts";
import type { QueueControls } from "../queue-controls.ts";
import type { ScheduleStore } from "../schedule-store.ts";
import type { ConsumerRestore, QueueConsumers } from "../task-queue.ts";
import { cleanupMemory } from "./memory-cleanup.ts";
import * as dead from "./memory-dead-letters.ts";
import { MemoryDelayedTasks } from "./memory-delayed.ts";
import { memoryFlows } from "./memory-flows.ts";
import { MemoryLeases } from "./memory-leases.ts";
import { publishNote, watchNotes } from "./memory-notes.ts";
import { memoryPresence } from "./memory-presence.ts";
import { memoryQueueControls } from "./memory-queue-controls.ts";
import { memoryQueueStats } from "./memory-queue-stats.ts";
import { MemoryJobRecords } from "./memory-records.ts";
import { memoryResults } from "./memory-results.ts";
import { memoryScheduleStore } from "./memory-schedule-store.ts";
import {
  checkToken,
  type MemoryServer,
  type MemoryServerOptions,
  MemoryServerState,
  memoryServerState,
} from "./memory-server.ts";
import { MemoryTaskLeasing } from "./memory-task-leasing.ts";
import { type MemoryTaskQueue, memoryBrokerCore, memoryTaskQueue } from "./memory-task-queue.ts";

export { createMemoryServer, type MemoryServer, type MemoryServerOptions } from "./memory-server.ts";

export interface MemoryBrokerOptions extends MemoryServerOptions {
  /**
   * This runtime's name in supervision leases.
   * @defaultValue `memory.<random>`
   */
  readonly holder?: string;
  /**
   * A server shared with other brokers (other runtimes in this process, a
   * test's second runtime). Without it the broker has a server of its own,
   * made from the options above, and closes it in `close()`.
   */
  readonly server?: MemoryServer;
}

export interface MemoryBroker extends Broker {
  readonly kind: "memory";
  readonly server: MemoryServer;
}

/**
 * The broker port in memory, with JetStream's semantics (checked against
 * nats-server 2.9.10 by the contract suite in test/contract/): the embedded
 * broker when no NATS is configured, and the base of `jetstate-jobs/testing`.
 * Every timer goes through the server's clock, so a `ManualClock` drives
 * leases, nak delays and duplicate windows deterministically.
 */
export const createMemoryBroker = (options: MemoryBrokerOptions = {}): MemoryBroker => {
  if (typeof options !== "object" || options === null) {
    throw new InvalidArgument({ message: "options: must be an object", field: "options" });
  }
  const { holder, server: shared, ...serverOptions } = options;
  if (holder !== undefined && (typeof holder !== "string" || holder === "")) {
    throw new InvalidArgument({ message: "holder: must be a non-empty string", field: "holder" });
  }
  const state = shared === undefined ? undefined : memoryServerState(shared);
  if (state !== undefined) {
    const [field] = Object.keys(serverOptions);
    if (field !== undefined) {
      throw new InvalidArgument({ message: `${field}: set it on the shared server instead`, field });
    }
  }
  const server = state ?? new MemoryServerState(serverOptions);
  return new MemoryJobBroker(server, holder ?? `memory.${randomUUID().slice(0, 8)}`, state === undefined);
};

/** The agents' store of a memory broker's server, shared by its runtimes; undefined for any other broker. */
export const memoryAgentsOf = (broker: Broker): AgentStore | undefined =>
  broker instanceof MemoryJobBroker ? broker.server.agents : undefined;

/** The schedules of a memory broker's server, shared by its runtimes; undefined for any other broker. */
export const memorySchedulesOf = (broker: Broker): ScheduleStore | undefined =>
  broker instanceof MemoryJobBroker ? broker.schedules : undefined;

class MemoryJobBroker implements MemoryBroker {
  readonly kind = "memory" as const;
  readonly server: MemoryServerState;
  readonly leases: MemoryLeases;
  readonly taskLeasing: MemoryTaskLeasing;
  readonly presence: Presence;
  readonly #delayed: MemoryDelayedTasks;
  readonly #records: MemoryJobRecords;
  readonly #tasks: MemoryTaskQueue;
  readonly #results: JobResults;
  readonly queueControls: QueueControls;
  readonly flows: FlowStore;
  readonly schedules: ScheduleStore;
  readonly #ownsServer: boolean;
  readonly #closing = new AbortController();
  /** Aborted when this broker or its server closes: every long-running method ends then. */
  readonly #stop: AbortSignal;

  constructor(server: MemoryServerState, holder: string, ownsServer: boolean) {
    this.server = server;
    this.#ownsServer = ownsServer;
    this.#stop = AbortSignal.any([this.#closing.signal, server.closed]);
    const core = memoryBrokerCore(server, (op) => this.#open(op), this.#stop);
    setMaxListeners(0, this.#closing.signal);
    this.leases = new MemoryLeases(server, holder, (op) => this.#open(op));
    this.taskLeasing = new MemoryTaskLeasing(server, (op) => this.#open(op));
    this.presence = memoryPresence(server.presence, server.clock, (op) => this.#open(op));
    this.#delayed = new MemoryDelayedTasks(server, (op) => this.#open(op), this.#stop);
    this.#records = new MemoryJobRecords(server, (op) => this.#open(op), this.#stop);
    this.#tasks = memoryTaskQueue(core, this.#delayed);
    this.#results = memoryResults(core);
    this.queueControls = memoryQueueControls(
      server.queues,
      (queue, kind) => server.permitPool(queue, kind),
      (op) => this.#open(op),
      server.targetPools,
      {
        publish: (queue, note) => {
          if (!this.#stop.aborted) publishNote(server, server.names.leaseNotesSubject(queue), note);
        },
        watch: (queue, onNote, signal) =>
          watchNotes(
            server,
            server.names.leaseNotesSubject(queue),
            onNote,
            AbortSignal.any([signal, this.#stop]),
          ),
      },
    );
    this.flows = memoryFlows(
      server.flows,
      (op) => this.#open(op),
      (op, body) => server.checkPayload(op, body, ""),
    );
    this.schedules = memoryScheduleStore(server.schedules, (op) => this.#open(op));
  }

  #open(operation: string): void {
    if (this.#closing.signal.aborted) throw new RuntimeStopped({ message: `${operation}: broker closed` });
    this.server.assertOpen(operation);
  }

  async maxPayload(): Promise<number> {
    this.#open("server.info");
    return this.server.maxPayload;
  }

  // ---- job records (memory-records.ts) ----

  createRecord(record: JobRecord): Promise<number> {
    return this.#records.createRecord(record);
  }

  getRecord(id: string): Promise<{ record: JobRecord; revision: number } | undefined> {
    return this.#records.getRecord(id);
  }

  updateRecord(record: JobRecord, revision: number): Promise<number> {
    return this.#records.updateRecord(record, revision);
  }

  deleteRecord(id: string, revision: number): Promise<void> {
    return this.#records.deleteRecord(id, revision);
  }

  listRecords(): Promise<JobRecord[]> {
    return this.#records.listRecords();
  }

  listRecordsPage(query: RecordsPageQuery): Promise<RecordsPage> {
    return this.#records.listRecordsPage(query);
  }

  watchRecordChanges(
    onRecord: (record: JobRecord, revision: number) => void | Promise<void>,
    signal: AbortSignal,
    onWatching?: (restarted: boolean) => void,
  ): Promise<void> {
    return this.#records.watchRecordChanges(onRecord, signal, onWatching);
  }

  // ---- tasks (memory-task-queue.ts) ----

  publishTasks(
    record: JobRecord,
    bodies: readonly string[],
    signal: AbortSignal,
    ids?: readonly string[],
  ): Promise<void> {
    return this.#tasks.publishTasks(record, bodies, signal, ids);
  }

  announceCreated(queue: string, jobId: string): Promise<void> {
    return this.#tasks.announceCreated(queue, jobId);
  }

  createConsumer(queue: string, jobId: string, settings: JobSettings): Promise<void> {
    return this.#tasks.createConsumer(queue, jobId, settings);
  }

  tasksCommitted(job: SubmitTasksRef): Promise<boolean> {
    return this.#tasks.tasksCommitted(job);
  }

  consumeTasks(...args: Parameters<MemoryTaskQueue["consumeTasks"]>): Promise<"gone" | "stopped"> {
    return this.#tasks.consumeTasks(...args);
  }

  consumeLane(...args: Parameters<MemoryTaskQueue["consumeLane"]>): Promise<"stopped"> {
    return this.#tasks.consumeLane(...args);
  }

  queueConsumers(queue: string): Promise<QueueConsumers> {
    return this.#tasks.queueConsumers(queue);
  }

  consumerCounts(
    ...args: Parameters<MemoryTaskQueue["consumerCounts"]>
  ): ReturnType<MemoryTaskQueue["consumerCounts"]> {
    return this.#tasks.consumerCounts(...args);
  }

  restoreConsumer(job: JobTasksRef, settings: JobSettings): Promise<ConsumerRestore> {
    return this.#tasks.restoreConsumer(job, settings);
  }

  removeTasks(job: JobTasksRef, below?: number): Promise<void> {
    return this.#tasks.removeTasks(job, below);
  }

  removeTaskMessages(job: JobTasksRef, tasks: readonly TaskMessageRef[]): Promise<void> {
    return this.#tasks.removeTaskMessages(job, tasks);
  }

  tasksMark(job: JobTasksRef): Promise<number> {
    return this.#tasks.tasksMark(job);
  }

  // ---- delayed tasks (memory-delayed.ts) ----

  holdTasks(record: JobRecord, held: readonly HeldTaskBody[], signal: AbortSignal): Promise<void> {
    return this.#delayed.holdTasks(record, held, signal);
  }

  consumeHeld(
    queue: string,
    onHeld: (task: HeldTask) => Promise<HeldAnswer>,
    signal: AbortSignal,
  ): Promise<void> {
    return this.#delayed.consumeHeld(queue, onHeld, signal);
  }

  releaseHeld(task: HeldTask): Promise<void> {
    return this.#delayed.releaseHeld(task);
  }

  heldCount(queue: string, jobId: string): Promise<number> {
    return this.#delayed.heldCount(queue, jobId);
  }

  // ---- results (memory-results.ts) ----

  publishResults(queue: string, jobId: string, body: string, msgId: string): Promise<void> {
    return this.#results.publishResults(queue, jobId, body, msgId);
  }

  readResults(...args: Parameters<JobResults["readResults"]>): Promise<void> {
    return this.#results.readResults(...args);
  }

  followResults(...args: Parameters<JobResults["followResults"]>): () => void {
    return this.#results.followResults(...args);
  }

  publishProgress(queue: string, jobId: string, body: string): void {
    this.#results.publishProgress(queue, jobId, body);
  }

  watchProgress(queue: string, jobId: string, onNote: (body: string) => void, signal: AbortSignal): void {
    this.#results.watchProgress(queue, jobId, onNote, signal);
  }

  // ---- dead letters ----

  /** One stream holds every queue's tasks here: capturing starts for all queues at once. */
  async ensureDeadLetters(queue: string): Promise<void> {
    this.#open("dead-letters.setup");
    checkToken("dead-letters.setup", "queue", queue);
    this.server.tasks.capturing = true;
  }

  async storeDeadLetter(letter: Omit<DeadLetter, "seq" | "taskId">, msgId: string): Promise<number> {
    this.#open("dead-letters.store");
    return dead.storeDeadLetter(this.server, letter, msgId);
  }

  async listDeadLetters(queue: string, jobId: string): Promise<DeadLetter[]> {
    this.#open("dead-letters.list");
    return dead.listDeadLetters(this.server, queue, jobId);
  }

  async removeDeadLetters(seqs: readonly number[]): Promise<void> {
    this.#open("dead-letters.remove");
    dead.removeDeadLetters(this.server, seqs);
  }

  async processExhausted(
    signal: AbortSignal,
    onUnhandled?: (failure: UnhandledExhausted) => void,
  ): Promise<void> {
    this.#open("dead-letters.process");
    await dead.processExhausted(this.server, AbortSignal.any([signal, this.#stop]), onUnhandled);
  }

  // ---- housekeeping ----

  async cleanup(options: BrokerCleanupOptions): Promise<JobsCleanupReport> {
    this.#open("cleanup");
    return cleanupMemory(this.server, this.leases, options);
  }

  /** Nothing to create: the memory broker's stores exist from the start. */
  async provision(_queues: readonly string[]): Promise<void> {}

  async queueStats(query: QueueStatsQuery): Promise<QueueStats[]> {
    this.#open("queue.stats");
    return memoryQueueStats(this.server, query);
  }

  /** Ends this broker's loops; a server of its own is closed too (every timer cleared). */
  async close(): Promise<void> {
    this.#closing.abort();
    if (this.#ownsServer) this.server.close();
  }
}
