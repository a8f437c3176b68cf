import { jobIdOfSubject } from "../../kernel/cleanup-plan.ts";
import { PermanentBrokerError } from "../../kernel/errors.ts";
import type { JobTasksRef } from "../../kernel/job-record.ts";
import { tokenChars } from "../../kernel/validation.ts";
import { decodeTask } from "../../kernel/wire.ts";
import { laneConsumer } from "../names.ts";
import type { AnswerClaim, LeasedTask, LeaseSettle, RecordedAnswer, TaskLeasing } from "../task-leasing.ts";
import type { MemoryConsumer } from "./memory-consumer.ts";
import { type MemoryServerState, memoryLaneName } from "./memory-server.ts";

/** How long an answer is remembered: as on NATS (the answers bucket's max age). */
const answerMemoryMs = 24 * 3600_000;

interface StoredAnswer {
  readonly answer: RecordedAnswer;
  readonly revision: number;
}

/** The answers of one memory server, shared by every broker (runtime) on it, as the KV bucket is on NATS. */
class AnswerStore {
  readonly entries = new Map<string, StoredAnswer>();
  revision = 0;

  prune(now: number): void {
    for (const [key, entry] of this.entries)
      if (now - entry.answer.at > answerMemoryMs) this.entries.delete(key);
  }
}

const stores = new WeakMap<MemoryServerState, AnswerStore>();
const storeOf = (server: MemoryServerState): AnswerStore => {
  let store = stores.get(server);
  if (!store) {
    store = new AnswerStore();
    stores.set(server, store);
  }
  return store;
};

/**
 * Leasing by reference on the memory broker, with the NATS adapter's
 * semantics: a delivery's reference names its consumer (the job's, or its
 * queue's lane), the task's sequence and the delivery number
 * (`mem.<consumer>.<seq>.<delivery>`), and a settle acts on the task by its
 * sequence whoever holds it now, as a late JetStream ack does; the answers
 * live on the server, not in one runtime.
 */
export class MemoryTaskLeasing implements TaskLeasing {
  readonly #server: MemoryServerState;
  readonly #open: (operation: string) => void;

  constructor(server: MemoryServerState, open: (operation: string) => void) {
    this.#server = server;
    this.#open = open;
  }

  /**
   * The reference names the consumer only: one stream holds every queue's
   * tasks here, job ids are unique, and a lane's name says its queue.
   */
  isDeliveryOf(ref: string, job: JobTasksRef): boolean {
    return parseRef(ref)?.consumer === (job.lane ? memoryLaneName(job.queue) : job.id);
  }

  async fetchTasks(queue: string, jobId: string, max: number, pulling?: () => void): Promise<LeasedTask[]> {
    this.#open("job.tasks.fetch");
    pulling?.();
    const found = this.#server.tasks.consumer(jobId);
    // As on NATS, where the consumer is looked for on the queue's own stream.
    return this.#take(
      found?.subject === this.#server.names.tasksSubject(queue, jobId) ? found : undefined,
      max,
    );
  }

  /** None before the queue's first lane job made its lane (on NATS, a pull with no consumer gets none). */
  async fetchLane(queue: string, max: number, pulling?: () => void): Promise<LeasedTask[]> {
    this.#open("job.tasks.fetch");
    pulling?.();
    return this.#take(this.#server.tasks.consumer(memoryLaneName(queue)), max);
  }

  /** Up to `max` deliveries of the consumer, at once; each names its job by its task's subject. */
  #take(consumer: MemoryConsumer | undefined, max: number): LeasedTask[] {
    const tasks: LeasedTask[] = [];
    while (consumer && tasks.length < max) {
      const next = consumer.takeNow();
      if (!next) break;
      // Stored: takeNow just leased it.
      const subject = this.#server.tasks.get(next.seq)?.subject ?? "";
      tasks.push({
        ref: `mem.${consumer.name}.${next.seq}.${next.deliveryCount}`,
        jobId: jobIdOfSubject(subject),
        body: next.body,
        deliveryCount: next.deliveryCount,
      });
    }
    return tasks;
  }

  async settle(settles: readonly LeaseSettle[]): Promise<void> {
    this.#open("job.tasks.settle");
    const parsed = settles.map((s) => {
      const ref = parseRef(s.ref);
      if (!ref) throw new Error(`settle: ${JSON.stringify(s.ref)} is not a task delivery of this runtime`);
      return { s, ref };
    });
    for (const { s, ref } of parsed) {
      // A deleted consumer takes nothing, as a publish to a gone delivery's reply subject does nothing.
      const consumer = this.#server.tasks.consumer(ref.consumer);
      if (!consumer) continue;
      if (s.action === "ack" || s.action === "term") consumer.settle(ref.seq);
      else if (s.action === "nak") consumer.release(ref.seq, s.delayMs);
      else if (s.action === "putBack") consumer.putBack(ref.seq);
      else consumer.extend(ref.seq);
    }
  }

  async deliveredTask(ref: string): Promise<{ readonly payload: unknown; readonly seq: number }> {
    this.#open("job.tasks.payload");
    const seq = parseRef(ref)?.seq;
    const stored = seq === undefined ? undefined : this.#server.tasks.get(seq);
    if (!stored) {
      throw new PermanentBrokerError({
        message: `job.tasks.payload: the task of ${JSON.stringify(ref)} is gone`,
        operation: "job.tasks.payload",
      });
    }
    return { payload: decodeTask(stored.body).payload, seq: stored.seq };
  }

  async claimAnswer(ref: string, digest: string): Promise<AnswerClaim> {
    this.#open("job.tasks.answer.claim");
    const store = storeOf(this.#server);
    const now = this.#server.clock.now();
    store.prune(now);
    const existing = store.entries.get(ref);
    if (existing) return { claimed: false, answer: existing.answer };
    const revision = ++store.revision;
    store.entries.set(ref, { answer: { status: "pending", digest, at: now }, revision });
    return { claimed: true, revision };
  }

  async answerOf(ref: string): Promise<RecordedAnswer | undefined> {
    this.#open("job.tasks.answer.get");
    return storeOf(this.#server).entries.get(ref)?.answer;
  }

  async recordAnswer(ref: string, answer: RecordedAnswer, revision: number): Promise<void> {
    this.#open("job.tasks.answer.record");
    const store = storeOf(this.#server);
    if (store.entries.get(ref)?.revision !== revision) {
      throw new PermanentBrokerError({
        message: `job.tasks.answer.record: the claim on ${JSON.stringify(ref)} was taken over`,
        operation: "job.tasks.answer.record",
        code: 10071,
      });
    }
    store.entries.set(ref, { answer, revision: ++store.revision });
  }

  async releaseAnswer(ref: string, revision: number): Promise<void> {
    this.#open("job.tasks.answer.release");
    const store = storeOf(this.#server);
    if (store.entries.get(ref)?.revision === revision) store.entries.delete(ref);
  }
}

const refPattern = new RegExp(
  `^mem\\.((?:${laneConsumer}\\.)?[${tokenChars}]+)\\.(\\d{1,15})\\.(\\d{1,15})$`,
);

const parseRef = (ref: string): { consumer: string; seq: number; delivery: number } | undefined => {
  const [, consumer, seq, delivery] = refPattern.exec(ref) ?? [];
  if (consumer === undefined) return undefined;
  return { consumer, seq: Number(seq), delivery: Number(delivery) };
};
