import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import { InvalidArgument, RuntimeStopped, workOver } from "../../kernel/errors.ts";
import type { JobRecord, JobSettings, JobTasksRef } from "../../kernel/job-record.ts";
import { LinkedControllers } from "../../kernel/signals.ts";
import { type HeldTaskBody, holdsAnswer } from "../../kernel/wire.ts";
import type { AgentStore } from "../agent-store.ts";
import type { Broker } from "../broker.ts";
import type { CleanupOptions, CleanupReport, QueueStats, QueueStatsQuery } from "../broker-admin.ts";
import type { DeadLetter, UnhandledExhausted } from "../dead-letters.ts";
import type { HeldAnswer, HeldTask } from "../delayed-tasks.ts";
import type { FlowStore } from "../flow-store.ts";
import type { RecordsPage, RecordsPageQuery } from "../job-records.ts";
import type { FollowOptions } from "../job-results.ts";
import { taskSubjectOf } from "../names.ts";
import type { Presence } from "../presence.ts";
import type { QueueControls } from "../queue-controls.ts";
import type { ScheduleStore } from "../schedule-store.ts";
import type { ConsumerRestore, LaneLease, QueueConsumers, TaskLease } from "../task-queue.ts";
import { cleanupMemory } from "./memory-cleanup.ts";
import type { MemoryConsumer } from "./memory-consumer.ts";
import * as dead from "./memory-dead-letters.ts";
import { MemoryDelayedTasks } from "./memory-delayed.ts";
import { memoryFlows } from "./memory-flows.ts";
import { MemoryLeases } from "./memory-leases.ts";
import { publishNote, watchNotes } from "./memory-notes.ts";
import { memoryPresence } from "./memory-presence.ts";
import { memoryQueueControls } from "./memory-queue-controls.ts";
import { memoryQueueStats } from "./memory-queue-stats.ts";
import { MemoryJobRecords } from "./memory-records.ts";
import { memoryScheduleStore } from "./memory-schedule-store.ts";
import {
  checkToken,
  type MemoryServer,
  type MemoryServerOptions,
  MemoryServerState,
  memoryLaneName,
  memoryServerState,
} from "./memory-server.ts";
import { MemoryTaskLeasing } from "./memory-task-leasing.ts";
import { indexAfter } from "./message-log.ts";

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
  readonly queueControls: QueueControls;
  readonly flows: FlowStore;
  readonly schedules: ScheduleStore;
  readonly #ownsServer: boolean;
  readonly #closing = new AbortController();
  /** Aborted when this broker or its server closes: every long-running method ends then. */
  readonly #stop: AbortSignal;
  /** What a job's reader or task loop stops with besides its caller's signal (`#until`). */
  readonly #stops: LinkedControllers;

  constructor(server: MemoryServerState, holder: string, ownsServer: boolean) {
    this.server = server;
    this.#ownsServer = ownsServer;
    this.#stop = AbortSignal.any([this.#closing.signal, server.closed]);
    this.#stops = new LinkedControllers(this.#stop);
    setMaxListeners(0, this.#closing.signal);
    this.leases = new MemoryLeases(server, holder, (op) => this.#open(op));
    this.taskLeasing = new MemoryTaskLeasing(server, (op) => this.#open(op));
    this.presence = memoryPresence(server.presence, server.clock, (op) => this.#open(op));
    this.#delayed = new MemoryDelayedTasks(server, (op) => this.#open(op), this.#stop);
    this.#records = new MemoryJobRecords(server, (op) => this.#open(op), this.#stop);
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
    this.flows = memoryFlows(server.flows, (op) => this.#open(op));
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
    onRecord: (record: JobRecord) => void | Promise<void>,
    signal: AbortSignal,
    onWatching?: () => void,
  ): Promise<void> {
    return this.#records.watchRecordChanges(onRecord, signal, onWatching);
  }

  // ---- tasks ----

  /** A lane job's task goes to its queue's lane, whose consumer is made first if need be. */
  async publishTasks(record: JobRecord, bodies: readonly string[], signal: AbortSignal): Promise<void> {
    const op = "job.tasks.publish";
    this.#open(op);
    if (signal.aborted) throw new RuntimeStopped({ message: `${op}: aborted` });
    const subject = this.#tasksSubject(op, record);
    if (record.lane) this.server.lane(record.queue);
    const idPrefix = `${record.id}.${record.submitId}`;
    // In order, failing at the first body too large: the ones before it are stored, as on NATS.
    bodies.forEach((body, n) => {
      const msgId = `${idPrefix}.${n}`;
      this.server.checkPayload(op, body, msgId);
      this.server.tasks.publish(subject, body, msgId);
    });
  }

  async createConsumer(queue: string, jobId: string, settings: JobSettings): Promise<void> {
    const op = "job.consumer.create";
    this.#open(op);
    const subject = this.server.names.tasksSubject(
      checkToken(op, "queue", queue),
      checkToken(op, "jobId", jobId, true),
    );
    this.server.tasks.putConsumer(jobId, subject, {
      // What the server makes of an unset ack wait (0) and max deliver (≤ 0: unlimited).
      ackWaitMs: settings.ackWaitMs > 0 ? settings.ackWaitMs : 30_000,
      maxDeliver: settings.maxDeliver,
    });
  }

  /**
   * A job's consumer exists; a lane job's task is stored, or a result of it
   * (a worker stores the result before it acks the task).
   */
  async tasksCommitted(job: JobTasksRef): Promise<boolean> {
    const op = "job.tasks.committed";
    if (!job.lane) return this.#consumerOf(op, job.queue, job.id) !== undefined;
    this.#open(op);
    const { tasks, results, names } = this.server;
    const stored = results.read(names.resultsSubject(job.queue, job.id));
    const last = stored[stored.length - 1];
    // Its last result, unless a redrive marker took it back (a redrive that died before its task).
    return tasks.count(this.#tasksSubject(op, job)) > 0 || (last !== undefined && holdsAnswer(last.body));
  }

  /** Made again over the job's tasks stored or held (the memory server never loses one by itself). */
  async restoreConsumer(job: JobTasksRef, settings: JobSettings): Promise<ConsumerRestore> {
    const op = "job.consumer.restore";
    if (this.#consumerOf(op, job.queue, job.id)) return "present";
    const stored = this.server.tasks.count(this.#tasksSubject(op, job)) > 0;
    const held = () => job.runAt !== undefined && this.heldCount(job.queue, job.id).then((n) => n > 0);
    if (!stored && !(await held())) return "empty";
    await this.createConsumer(job.queue, job.id, settings);
    return "restored";
  }

  /** Each job consumer of the queue (its subject is the job's), and its lane if made or holding tasks. */
  async queueConsumers(queue: string): Promise<QueueConsumers> {
    const op = "job.queue.consumers";
    this.#open(op);
    const { tasks, names } = this.server;
    checkToken(op, "queue", queue);
    const jobIds = tasks
      .consumers()
      .filter((consumer) => consumer.subject === names.tasksSubject(queue, consumer.name))
      .map((consumer) => consumer.name);
    const laneTask = names.laneSubject(queue, "");
    const lane =
      tasks.consumer(memoryLaneName(queue)) !== undefined ||
      tasks.subjects().some((subject) => subject.startsWith(laneTask));
    return { jobIds, lane };
  }

  /** A lane job has none of its own: the lane's counts are every lane job's. */
  async consumerCounts(
    job: JobTasksRef,
  ): Promise<{ waiting: number; held: number; redelivered: number } | undefined> {
    const op = "job.consumer.counts";
    if (!job.lane) return this.#consumerOf(op, job.queue, job.id)?.counts();
    this.#open(op);
    return undefined;
  }

  /** Where the job's tasks are: its own subject, or its queue's lane. */
  #tasksSubject(op: string, job: JobTasksRef): string {
    return taskSubjectOf(this.server.names, {
      ...job,
      queue: checkToken(op, "queue", job.queue),
      id: checkToken(op, "jobId", job.id),
    });
  }

  /**
   * The job's consumer on its queue's tasks: one stream holds every queue's
   * tasks here, so a consumer of another queue's job (never made on NATS,
   * where each queue has its own stream) is not found either.
   */
  #consumerOf(op: string, queue: string, jobId: string): MemoryConsumer | undefined {
    this.#open(op);
    const consumer = this.server.tasks.consumer(checkToken(op, "jobId", jobId, true));
    const subject = this.server.names.tasksSubject(checkToken(op, "queue", queue), jobId);
    return consumer?.subject === subject ? consumer : undefined;
  }

  /** One stream holds every queue's tasks here: its next sequence. */
  async tasksMark(_job: JobTasksRef): Promise<number> {
    this.#open("job.tasks.mark");
    return this.server.tasks.nextSeq;
  }

  /** A lane job's task only: the lane consumer serves the queue's other lane jobs. */
  async removeTasks(job: JobTasksRef, below?: number): Promise<void> {
    const op = "job.tasks.remove";
    this.#open(op);
    const subject = this.#tasksSubject(op, job);
    if (job.runAt !== undefined) this.#delayed.unhold(job);
    // The purge first, as on NATS.
    this.server.tasks.purge(subject, below);
    if (!job.lane) this.server.tasks.deleteConsumer(job.id);
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

  /** Nobody listens to job announcements in memory: every runtime on the server watches the records. */
  async announceCreated(queue: string, _jobId: string): Promise<void> {
    this.#open("job.announce");
    checkToken("job.announce", "queue", queue);
  }

  /**
   * One task at a time is leased and handed over, so none is leased ahead of
   * `onTask` (the port allows up to `maxMessages`).
   */
  async consumeTasks(
    queue: string,
    jobId: string,
    _maxMessages: number,
    onTask: (lease: TaskLease) => void | Promise<void>,
    signal: AbortSignal,
  ): Promise<"gone" | "stopped"> {
    const consumer = this.#consumerOf("job.tasks.consume", queue, jobId);
    if (!consumer) return "gone";
    return this.#deliver(consumer, onTask, signal);
  }

  /** As `consumeTasks`, from the queue's lane (made if need be); each lease names its job. */
  async consumeLane(
    queue: string,
    _maxMessages: number,
    onTask: (lease: LaneLease) => void | Promise<void>,
    signal: AbortSignal,
  ): Promise<"stopped"> {
    const op = "job.lane.consume";
    this.#open(op);
    await this.#deliver(this.server.lane(checkToken(op, "queue", queue)), onTask, signal);
    // Never "gone": nothing deletes a lane consumer.
    return "stopped";
  }

  async #deliver(
    consumer: MemoryConsumer,
    onTask: (lease: LaneLease) => void | Promise<void>,
    signal: AbortSignal,
  ): Promise<"gone" | "stopped"> {
    const { stop, done } = this.#until(signal);
    try {
      for (;;) {
        const next = await consumer.take(stop);
        if (next === "gone" || next === "stopped") return next;
        try {
          await onTask(next);
        } catch {
          // As the supervised NATS loop does: the task stays leased until its lease runs out.
        }
      }
    } finally {
      done();
    }
  }

  /**
   * A signal aborted with `signal` or when this broker closes, for one job's loop: linked to the
   * broker's stop through one listener for all of them, not an `AbortSignal.any` each (on Node 20
   * each leaves a weak reference in the broker's stop signal for good: one for every job).
   * `done()` once the loop has ended.
   */
  #until(signal: AbortSignal): { stop: AbortSignal; done: () => void } {
    const controller = this.#stops.link(signal);
    return { stop: controller.signal, done: () => this.#stops.unlink(controller) };
  }

  // ---- results ----

  async publishResults(queue: string, jobId: string, body: string, msgId: string): Promise<void> {
    this.#open("job.results.publish");
    dead.appendResults(this.server, queue, jobId, body, msgId);
  }

  async readResults(
    queue: string,
    jobId: string,
    onMessage: (body: string, pending: number) => void,
    signal: AbortSignal,
    onCaughtUp?: () => void,
  ): Promise<void> {
    const op = "job.results.read";
    this.#open(op);
    const subject = this.server.names.resultsSubject(
      checkToken(op, "queue", queue),
      checkToken(op, "jobId", jobId),
    );
    const { stop, done } = this.#until(signal);
    const log = this.server.results;
    try {
      // Asynchronous from the first message on, as a consumer's deliveries are.
      await Promise.resolve();
      if (!stop.aborted && log.read(subject).length === 0) onCaughtUp?.();
      let last = 0;
      while (!stop.aborted) {
        for (;;) {
          const messages = log.read(subject);
          const at = indexAfter(messages, last);
          const message = messages[at];
          if (message === undefined || stop.aborted) break;
          last = message.seq;
          try {
            onMessage(message.body, messages.length - at - 1);
          } catch {
            // As on NATS, where the restarted reader goes on after the message it handed over.
          }
        }
        await log.next(subject, last, stop);
      }
    } finally {
      done();
    }
  }

  followResults(
    queue: string,
    jobId: string,
    onMessage: (body: string, pending: number) => void,
    { onCaughtUp, onFailed }: FollowOptions,
  ): () => void {
    // Here a reader is a loop of its own, with a signal of its own (linked, `#until`).
    const following = new AbortController();
    this.readResults(queue, jobId, onMessage, following.signal, onCaughtUp).catch((error: unknown) =>
      onFailed?.(error),
    );
    return () => following.abort(workOver);
  }

  // ---- dead letters ----

  /** One stream holds every queue's tasks here: capturing starts for all queues at once. */
  async ensureDeadLetters(queue: string): Promise<void> {
    this.#open("dead-letters.setup");
    checkToken("dead-letters.setup", "queue", queue);
    this.server.tasks.capturing = true;
  }

  async storeDeadLetter(letter: Omit<DeadLetter, "seq" | "taskId">, msgId: string): Promise<void> {
    this.#open("dead-letters.store");
    dead.storeDeadLetter(this.server, letter, msgId);
  }

  async listDeadLetters(queue: string, jobId: string): Promise<DeadLetter[]> {
    this.#open("dead-letters.list");
    return dead.listDeadLetters(this.server, queue, jobId);
  }

  async removeDeadLetters(seqs: readonly number[]): Promise<void> {
    this.#open("dead-letters.remove");
    dead.removeDeadLetters(this.server, seqs);
  }

  publishProgress(queue: string, jobId: string, body: string): void {
    if (this.#stop.aborted) return;
    publishNote(this.server, this.server.names.progressSubject(queue, jobId), body);
  }

  watchProgress(queue: string, jobId: string, onNote: (body: string) => void, signal: AbortSignal): void {
    const subject = this.server.names.progressSubject(queue, jobId);
    watchNotes(this.server, subject, onNote, AbortSignal.any([signal, this.#stop]));
  }

  async processExhausted(
    signal: AbortSignal,
    onUnhandled?: (failure: UnhandledExhausted) => void,
  ): Promise<void> {
    this.#open("dead-letters.process");
    await dead.processExhausted(this.server, AbortSignal.any([signal, this.#stop]), onUnhandled);
  }

  // ---- housekeeping ----

  async cleanup(
    options: CleanupOptions & { readonly retentionMs: number; readonly now?: number },
  ): Promise<CleanupReport> {
    this.#open("cleanup");
    return cleanupMemory(this.server, this.leases, options);
  }

  /** Ends this broker's loops; a server of its own is closed too (every timer cleared). */
  /** Nothing to create: the memory broker's stores exist from the start. */
  async provision(_queues: readonly string[]): Promise<void> {}

  async queueStats(query: QueueStatsQuery): Promise<QueueStats[]> {
    this.#open("queue.stats");
    return memoryQueueStats(this.server, query);
  }

  async close(): Promise<void> {
    this.#closing.abort();
    if (this.#ownsServer) this.server.close();
  }
}
