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

/** A subject's or a filter's tasks: sequences in stream order, and how many of them are still stored. */
interface SeqIndex {
  seqs: number[];
  count: number;
}

/** An index this long or more is rebuilt once less than half of it is stored (a lane never empties). */
const compactFrom = 64;

/**
 * The work-queue tasks stream: messages by subject (one per job), one
 * sequence counter, a duplicate window, and at most one consumer per subject.
 * A consumer filters one subject (a job's) or every subject under a prefix
 * (`<prefix>.>`, a queue's lane). A message stays until a consumer acks or
 * terms it, or it is purged or deleted; messages on a subject without a
 * consumer are stored but invisible.
 */
export class TaskStream implements ConsumerSource {
  readonly clock: Clock;
  readonly #messages = new Map<number, StoredTask>();
  /** Per subject: its sequences (append-only until the subject empties, but for compaction). */
  readonly #subjects = new Map<string, SeqIndex>();
  /** Per wildcard filter a consumer reads: the sequences of every subject it matches, likewise. */
  readonly #filters = new Map<string, SeqIndex>();
  readonly #dedupe: DedupeWindow;
  readonly #consumers = new Map<string, MemoryConsumer>();
  /** Consumers by filter: a subject, or a wildcard. */
  readonly #bySubject = new Map<string, MemoryConsumer>();
  /** Exhausted tasks reported while dead letters are set up (the advisories stream on NATS). */
  readonly advisories = new AsyncQueue<ExhaustedTask>();
  /** Advisories are captured only once someone set dead letters up, as on NATS. */
  capturing = false;
  /** Queues that ever had a task or a consumer here (NATS keeps a queue's tasks stream): `<prefix>.tasks.<queue>.…`. */
  readonly queues = new Set<string>();
  #seq = 0;

  constructor(clock: Clock) {
    this.clock = clock;
    this.#dedupe = new DedupeWindow(clock);
  }

  /** Stores a task unless its message id is a duplicate; a consumer on its subject may deliver it at once. */
  publish(subject: string, body: string, msgId: string): void {
    if (!this.#dedupe.admit(msgId)) return;
    this.#knowQueue(subject);
    const task: StoredTask = { seq: ++this.#seq, subject, body, at: this.clock.now() };
    this.#messages.set(task.seq, task);
    append(this.#subjects, subject, task.seq);
    const consumer = this.#consumerOf(subject);
    if (!consumer) return;
    if (consumer.subject !== subject) append(this.#filters, consumer.subject, task.seq);
    consumer.pump();
  }

  get(seq: number): StoredTask | undefined {
    return this.#messages.get(seq);
  }

  /** Tasks stored on a subject, or under a consumer's wildcard filter. */
  count(filter: string): number {
    return (this.#subjects.get(filter) ?? this.#filters.get(filter))?.count ?? 0;
  }

  seqsOf(filter: string): readonly number[] {
    return (this.#subjects.get(filter) ?? this.#filters.get(filter))?.seqs ?? noSeqs;
  }

  /** Subjects that hold tasks. */
  subjects(): string[] {
    return [...this.#subjects.keys()];
  }

  remove(seq: number): void {
    const task = this.#messages.get(seq);
    if (!task) return;
    this.#messages.delete(seq);
    this.#removed(this.#subjects, task.subject, 1);
    const consumer = this.#consumerOf(task.subject);
    if (consumer && consumer.subject !== task.subject) this.#removed(this.#filters, consumer.subject, 1);
    consumer?.forget(seq);
  }

  /** The sequence the next task stored gets: every task stored now is below it. */
  get nextSeq(): number {
    return this.#seq + 1;
  }

  /** Removes the subject's tasks; with `below`, only those stored below that sequence. */
  purge(subject: string, below?: number): void {
    if (below !== undefined) {
      for (const seq of [...this.seqsOf(subject)]) if (seq < below) this.remove(seq);
      return;
    }
    const entry = this.#subjects.get(subject);
    if (!entry) return;
    this.#subjects.delete(subject);
    const consumer = this.#consumerOf(subject);
    if (consumer?.subject === subject) {
      for (const seq of entry.seqs) this.#messages.delete(seq);
      consumer.forgetAll();
      return;
    }
    // One subject among the filter's: only its own tasks are forgotten.
    for (const seq of entry.seqs) {
      if (!this.#messages.delete(seq)) continue;
      consumer?.forget(seq);
    }
    if (consumer) this.#removed(this.#filters, consumer.subject, entry.count);
  }

  consumer(name: string): MemoryConsumer | undefined {
    return this.#consumers.get(name);
  }

  /** Every consumer: each job's and each queue's lane. */
  consumers(): MemoryConsumer[] {
    return [...this.#consumers.values()];
  }

  /** Consumers of one subject each (a job's; a lane's filter is a wildcard). */
  subjectConsumerNames(): string[] {
    return [...this.#consumers.values()]
      .filter((consumer) => !isWildcard(consumer.subject))
      .map((consumer) => consumer.name)
      .sort();
  }

  /** Creates the consumer, or updates it if it exists (as `consumers.add` does on nats-server 2.9). */
  putConsumer(name: string, subject: string, settings: ConsumerSettings): MemoryConsumer {
    this.#knowQueue(subject);
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
      if (consumer.subject !== subject) this.#unfilter(consumer.subject);
      this.#filter(subject);
      this.#bySubject.set(subject, consumer);
      consumer.configure(subject, settings);
      return consumer;
    }
    this.#filter(subject);
    consumer = new MemoryConsumer(this, name, subject, settings);
    this.#consumers.set(name, consumer);
    this.#bySubject.set(subject, consumer);
    return consumer;
  }

  deleteConsumer(name: string): void {
    const consumer = this.#consumers.get(name);
    if (!consumer) return;
    this.#consumers.delete(name);
    this.#unfilter(consumer.subject);
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

  #knowQueue(subject: string): void {
    const queue = subject.split(".")[2];
    if (queue !== undefined && !this.queues.has(queue)) this.queues.add(queue);
  }

  /** The consumer of a subject: the one filtering it alone, else one whose wildcard matches it. */
  #consumerOf(subject: string): MemoryConsumer | undefined {
    const own = this.#bySubject.get(subject);
    if (own) return own;
    for (let dot = subject.indexOf("."); dot >= 0; dot = subject.indexOf(".", dot + 1)) {
      const wildcard = this.#bySubject.get(`${subject.slice(0, dot + 1)}>`);
      if (wildcard) return wildcard;
    }
    return undefined;
  }

  /** A wildcard filter's index, from the tasks stored now (a consumer delivers those made before it). */
  #filter(filter: string): void {
    if (!isWildcard(filter) || this.#bySubject.has(filter)) return;
    const under = filter.slice(0, -1);
    const seqs: number[] = [];
    for (const [subject, entry] of this.#subjects)
      if (subject.startsWith(under))
        for (const seq of entry.seqs) if (this.#messages.has(seq)) seqs.push(seq);
    if (seqs.length > 0) this.#filters.set(filter, { seqs: seqs.sort((a, b) => a - b), count: seqs.length });
  }

  #unfilter(filter: string): void {
    this.#bySubject.delete(filter);
    this.#filters.delete(filter);
  }

  /** `n` of the key's tasks left the stream: an index emptied goes, one mostly gone is rebuilt. */
  #removed(index: Map<string, SeqIndex>, key: string, n: number): void {
    const entry = index.get(key);
    if (!entry) return;
    entry.count -= n;
    if (entry.count <= 0) index.delete(key);
    else if (entry.seqs.length >= compactFrom && entry.count * 2 < entry.seqs.length)
      // A new array: its consumer starts over on it, skipping what it delivered already.
      index.set(key, { seqs: entry.seqs.filter((seq) => this.#messages.has(seq)), count: entry.count });
  }
}

const isWildcard = (filter: string): boolean => filter.endsWith(".>");

const append = (index: Map<string, SeqIndex>, key: string, seq: number): void => {
  const entry = index.get(key);
  if (entry) {
    entry.seqs.push(seq);
    entry.count++;
  } else index.set(key, { seqs: [seq], count: 1 });
};

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
