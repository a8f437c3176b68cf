import type { Clock } from "../../kernel/clock.ts";
import { PermanentBrokerError } from "../../kernel/errors.ts";
import {
  type ConsumerSettings,
  type ConsumerSource,
  type ExhaustedTask,
  MemoryConsumer,
  type StoredTask,
} from "./memory-consumer.ts";

export type { ExhaustedTask, StoredTask } from "./memory-consumer.ts";

import { DedupeWindow } from "./message-log.ts";

const noSeqs: readonly number[] = Object.freeze([]);

/**
 * The work-queue tasks stream: messages by subject (one per job), one
 * sequence counter, a duplicate window, and at most one consumer per subject.
 * A message stays until a consumer acks or terms it, or it is purged or
 * deleted; messages on a subject without a consumer are stored but invisible.
 */
export class TaskStream implements ConsumerSource {
  readonly clock: Clock;
  readonly #messages = new Map<number, StoredTask>();
  /** Per subject: its sequences in order (append-only until the subject empties) and how many are stored. */
  readonly #subjects = new Map<string, { seqs: number[]; count: number }>();
  readonly #dedupe: DedupeWindow;
  readonly #consumers = new Map<string, MemoryConsumer>();
  readonly #bySubject = new Map<string, MemoryConsumer>();
  /** Exhausted tasks reported while dead letters are set up (the advisories stream on NATS). */
  readonly advisories = new AsyncQueue<ExhaustedTask>();
  /** Advisories are captured only once someone set dead letters up, as on NATS. */
  capturing = false;
  #seq = 0;

  constructor(clock: Clock) {
    this.clock = clock;
    this.#dedupe = new DedupeWindow(clock);
  }

  /** Stores a task unless its message id is a duplicate; a consumer on its subject may deliver it at once. */
  publish(subject: string, body: string, msgId: string): void {
    if (!this.#dedupe.admit(msgId)) return;
    const task: StoredTask = { seq: ++this.#seq, subject, body };
    this.#messages.set(task.seq, task);
    let entry = this.#subjects.get(subject);
    if (!entry) {
      entry = { seqs: [], count: 0 };
      this.#subjects.set(subject, entry);
    }
    entry.seqs.push(task.seq);
    entry.count++;
    this.#bySubject.get(subject)?.pump();
  }

  get(seq: number): StoredTask | undefined {
    return this.#messages.get(seq);
  }

  count(subject: string): number {
    return this.#subjects.get(subject)?.count ?? 0;
  }

  seqsOf(subject: string): readonly number[] {
    return this.#subjects.get(subject)?.seqs ?? noSeqs;
  }

  /** Subjects that hold tasks. */
  subjects(): string[] {
    return [...this.#subjects.keys()];
  }

  remove(seq: number): void {
    const task = this.#messages.get(seq);
    if (!task) return;
    this.#messages.delete(seq);
    const entry = this.#subjects.get(task.subject);
    if (entry && --entry.count === 0) this.#subjects.delete(task.subject);
    this.#bySubject.get(task.subject)?.forget(seq);
  }

  purge(subject: string): void {
    const entry = this.#subjects.get(subject);
    if (!entry) return;
    for (const seq of entry.seqs) this.#messages.delete(seq);
    this.#subjects.delete(subject);
    this.#bySubject.get(subject)?.forgetAll();
  }

  consumer(name: string): MemoryConsumer | undefined {
    return this.#consumers.get(name);
  }

  consumerNames(): string[] {
    return [...this.#consumers.keys()].sort();
  }

  /** Creates the consumer, or updates it if it exists (as `consumers.add` does on nats-server 2.9). */
  putConsumer(name: string, subject: string, settings: ConsumerSettings): void {
    const holder = this.#bySubject.get(subject);
    if (holder && holder.name !== name) {
      // A work-queue stream takes one consumer per subject.
      throw new PermanentBrokerError({
        message: "job.consumer.create: filtered consumer not unique on workqueue stream",
        operation: "job.consumer.create",
        code: 10100,
      });
    }
    let consumer = this.#consumers.get(name);
    if (consumer) {
      if (consumer.subject !== subject) this.#bySubject.delete(consumer.subject);
      this.#bySubject.set(subject, consumer);
      consumer.configure(subject, settings);
      return;
    }
    consumer = new MemoryConsumer(this, name, subject, settings);
    this.#consumers.set(name, consumer);
    this.#bySubject.set(subject, consumer);
  }

  deleteConsumer(name: string): void {
    const consumer = this.#consumers.get(name);
    if (!consumer) return;
    this.#consumers.delete(name);
    this.#bySubject.delete(consumer.subject);
    consumer.delete();
  }

  exhausted(task: ExhaustedTask): void {
    if (this.capturing) this.advisories.push(task);
  }

  /** Clears every lease and delay timer; waiting consumers and advisory readers stop. */
  close(): void {
    for (const consumer of this.#consumers.values()) consumer.close();
    this.advisories.close();
  }
}

/** A FIFO whose readers wait for items; each item goes to one reader. */
class AsyncQueue<T> {
  #items: T[] = [];
  readonly #readers: Array<(item: T | undefined) => void> = [];
  #closed = false;

  push(item: T): void {
    const reader = this.#readers.shift();
    if (reader) reader(item);
    else this.#items.push(item);
  }

  /** The next item; undefined once `signal` aborts or the queue closes. */
  take(signal: AbortSignal): Promise<T | undefined> {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift());
    if (signal.aborted || this.#closed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const reader = (item: T | undefined) => {
        signal.removeEventListener("abort", onAbort);
        resolve(item);
      };
      const onAbort = () => {
        const at = this.#readers.indexOf(reader);
        if (at >= 0) this.#readers.splice(at, 1);
        resolve(undefined);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#readers.push(reader);
    });
  }

  close(): void {
    this.#closed = true;
    this.#items = [];
    for (const reader of this.#readers.splice(0)) reader(undefined);
  }
}
