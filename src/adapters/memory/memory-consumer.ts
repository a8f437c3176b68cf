import { jobIdOfSubject } from "../../kernel/cleanup-plan.ts";
import type { Clock } from "../../kernel/clock.ts";
import { PermanentBrokerError } from "../../kernel/errors.ts";
import type { LaneLease } from "../task-queue.ts";

export interface StoredTask {
  readonly seq: number;
  readonly subject: string;
  readonly body: string;
  /** When it was stored, by the server's clock (a JetStream message's timestamp). */
  readonly at: number;
}

/** What JetStream's MAX_DELIVERIES advisory says: which consumer, which message, how many deliveries. */
export interface ExhaustedTask {
  readonly consumer: string;
  readonly seq: number;
  readonly deliveries: number;
}

/** What a consumer needs from the stream it reads: the stream implements it. */
export interface ConsumerSource {
  readonly clock: Clock;
  get(seq: number): StoredTask | undefined;
  /** Tasks stored on the consumer's filter (a subject, or a wildcard over subjects). */
  count(filter: string): number;
  /** Their sequences in stream order; a new array once the stream rebuilt it (delivered ones are skipped by sequence). */
  seqsOf(filter: string): readonly number[];
  remove(seq: number): void;
  /** Stores a task unless its message id is a duplicate. */
  publish(subject: string, body: string, msgId: string): void;
  exhausted(task: ExhaustedTask): void;
}

export interface ConsumerSettings {
  readonly ackWaitMs: number;
  /** Deliveries of one task; ≤ 0 is unlimited, as `max_deliver: -1` is. */
  readonly maxDeliver: number;
}

/**
 * Where a delivered task is: under a lease, released for redelivery now
 * (`ready`), released for later (`delayed`, a nak with a delay), or
 * `exhausted` (its next delivery would pass maxDeliver: reported once, then
 * left in the stream for the dead-letter processor to remove).
 */
type DeliveryState = "leased" | "ready" | "delayed" | "exhausted";

interface Delivery {
  count: number;
  state: DeliveryState;
  timer: unknown;
}

type Next = LaneLease | "gone" | "stopped";

/**
 * A durable consumer on the tasks stream (a job's, on its subject, or a
 * queue's lane, on a wildcard over its lane jobs' subjects), with
 * JetStream's pull semantics as nats-server 2.9 has them:
 * - tasks go out in stream order, redeliveries first, each to one waiting
 *   `take` at a time (waiters are served in turn: round robin);
 * - a delivery is leased for `ackWaitMs`; `working()` restarts the lease,
 *   `nak(delay)` releases it for later, expiry releases it now;
 * - `ack()` and `term()` remove the task, whichever delivery they come from,
 *   even one whose lease ran out or that was exhausted (as the server does);
 * - maxDeliver is checked on the next delivery attempt, not when the lease
 *   runs out: a task is exhausted only once someone asks for a task.
 * Every lease operation names the task by its stream sequence, so a stale
 * lease acts on the task like a late JetStream ack would.
 */
export class MemoryConsumer {
  readonly name: string;
  #subject: string;
  #settings: ConsumerSettings;
  readonly #stream: ConsumerSource;
  /** Delivered tasks still stored, by stream sequence. */
  readonly #deliveries = new Map<number, Delivery>();
  #redeliver: number[] = [];
  #redeliverHead = 0;
  /** The filter's sequences as last seen, and how far they were delivered. */
  #seqs: readonly number[] = [];
  #cursor = 0;
  #nextSeq = 1;
  readonly #waiters: Array<(next: Next) => void> = [];
  #deleted = false;

  constructor(stream: ConsumerSource, name: string, subject: string, settings: ConsumerSettings) {
    this.#stream = stream;
    this.name = name;
    this.#subject = subject;
    this.#settings = settings;
  }

  /** The filter: one subject, or `<prefix>.>` for every subject under it. */
  get subject(): string {
    return this.#subject;
  }

  /** Creating an existing consumer updates it (nats-server 2.9 does); a new filter starts over. */
  configure(subject: string, settings: ConsumerSettings): void {
    this.#settings = settings;
    if (subject === this.#subject) return;
    this.forgetAll();
    this.#subject = subject;
    this.#seqs = [];
    this.#cursor = 0;
    this.#nextSeq = 1;
    this.pump();
  }

  /** The next task, leased; waits for one. "gone" once the consumer is deleted, "stopped" when `signal` aborts. */
  take(signal: AbortSignal): Promise<Next> {
    if (this.#deleted) return Promise.resolve("gone");
    if (signal.aborted) return Promise.resolve("stopped");
    const seq = this.#waiters.length === 0 ? this.#pick() : undefined;
    if (seq !== undefined) return Promise.resolve(this.#lease(seq));
    return new Promise<Next>((resolve) => {
      const waiter = (next: Next) => {
        signal.removeEventListener("abort", onAbort);
        resolve(next);
      };
      const onAbort = () => {
        const at = this.#waiters.indexOf(waiter);
        if (at >= 0) this.#waiters.splice(at, 1);
        resolve("stopped");
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /**
   * The next deliverable task, leased, or undefined at once if none is ready
   * (a `no_wait` pull request): leasing by reference for the HTTP API.
   */
  takeNow(): { seq: number; jobId: string; body: string; deliveryCount: number } | undefined {
    if (this.#deleted) return undefined;
    const seq = this.#pick();
    if (seq === undefined) return undefined;
    const lease = this.#lease(seq);
    return { seq, jobId: lease.jobId, body: lease.body, deliveryCount: lease.deliveryCount };
  }

  /** Hands tasks that became deliverable to whoever waits. */
  pump(): void {
    while (!this.#deleted) {
      const waiter = this.#waiters[0];
      if (!waiter) return;
      const seq = this.#pick();
      if (seq === undefined) return;
      this.#waiters.shift();
      waiter(this.#lease(seq));
    }
  }

  // ---- lease operations, by stream sequence ----

  settle(seq: number): void {
    if (!this.#deleted) this.#stream.remove(seq);
  }

  /** A copy of the task stored as a new message, then this one removed (`TaskLease.putBack`). */
  putBack(seq: number): boolean {
    const task = this.#stream.get(seq);
    // Reported dead already (its lease ran out on its last delivery): as `release`, too late.
    if (this.#deleted || !task || this.#deliveries.get(seq)?.state === "exhausted") return false;
    this.#stream.publish(task.subject, task.body, `back.${seq}`);
    this.settle(seq);
    return true;
  }

  release(seq: number, delayMs: number): void {
    const d = this.#deliveries.get(seq);
    if (this.#deleted || !d || d.state === "exhausted") return;
    if (delayMs > 0) {
      d.state = "delayed";
      this.#arm(seq, d, delayMs);
      return;
    }
    this.#disarm(d);
    d.state = "ready";
    this.#redeliver.push(seq);
    this.pump();
  }

  extend(seq: number): void {
    const d = this.#deliveries.get(seq);
    if (!this.#deleted && d?.state === "leased") this.#arm(seq, d, this.#settings.ackWaitMs);
  }

  /** The task left the stream (answered, purged, dead-lettered). */
  forget(seq: number): void {
    const d = this.#deliveries.get(seq);
    if (!d) return;
    this.#disarm(d);
    this.#deliveries.delete(seq);
  }

  forgetAll(): void {
    for (const d of this.#deliveries.values()) this.#disarm(d);
    this.#deliveries.clear();
    this.#redeliver = [];
    this.#redeliverHead = 0;
  }

  /** Deleted: every waiting and future `take` resolves "gone"; leases become no-ops. */
  delete(): void {
    this.#deleted = true;
    this.forgetAll();
    for (const waiter of this.#waiters.splice(0)) waiter("gone");
  }

  /** The broker closed: no timer left, waiting `take`s resolve "stopped". */
  close(): void {
    this.forgetAll();
    for (const waiter of this.#waiters.splice(0)) waiter("stopped");
  }

  /** Not yet delivered or released (waiting), under a lease (held), delivered more than once. */
  counts(): { waiting: number; held: number; redelivered: number } {
    let held = 0;
    let released = 0;
    let redelivered = 0;
    for (const d of this.#deliveries.values()) {
      if (d.state === "leased") held++;
      else if (d.state !== "exhausted") released++;
      if (d.count > 1) redelivered++;
    }
    const fresh = this.#stream.count(this.#subject) - this.#deliveries.size;
    return { waiting: fresh + released, held, redelivered };
  }

  /** Stored and never delivered (JetStream's `num_pending`), and the first of them (the oldest). */
  pending(): { count: number; first: StoredTask | undefined } {
    const count = this.#stream.count(this.#subject) - this.#deliveries.size;
    if (this.#deleted || count <= 0) return { count: 0, first: undefined };
    // Fresh tasks go out in stream order: the first not delivered is the first stored from #nextSeq.
    const seqs = this.#stream.seqsOf(this.#subject);
    let low = 0;
    let high = seqs.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if ((seqs[mid] ?? 0) < this.#nextSeq) low = mid + 1;
      else high = mid;
    }
    for (let i = low; i < seqs.length; i++) {
      const task = this.#stream.get(seqs[i] ?? 0);
      if (task) return { count, first: task };
    }
    return { count, first: undefined };
  }

  #pick(): number | undefined {
    for (;;) {
      const seq = this.#redeliver[this.#redeliverHead];
      if (seq === undefined) break;
      this.#redeliverHead++;
      if (this.#redeliverHead > 1024 && this.#redeliverHead * 2 > this.#redeliver.length) {
        this.#redeliver = this.#redeliver.slice(this.#redeliverHead);
        this.#redeliverHead = 0;
      }
      const d = this.#deliveries.get(seq);
      if (d?.state !== "ready") continue; // answered or leased again since it was queued
      const max = this.#settings.maxDeliver;
      if (max > 0 && d.count >= max) {
        d.state = "exhausted";
        this.#stream.exhausted({ consumer: this.name, seq, deliveries: d.count });
        continue;
      }
      return seq;
    }
    const seqs = this.#stream.seqsOf(this.#subject);
    if (seqs !== this.#seqs) {
      this.#seqs = seqs;
      this.#cursor = 0;
    }
    for (;;) {
      const seq = seqs[this.#cursor];
      if (seq === undefined) break;
      this.#cursor++;
      if (seq >= this.#nextSeq && this.#stream.get(seq)) {
        this.#nextSeq = seq + 1;
        return seq;
      }
    }
    return undefined;
  }

  #lease(seq: number): LaneLease {
    const task = this.#stream.get(seq);
    if (!task) {
      throw new PermanentBrokerError({
        message: `task ${seq} of consumer ${this.name} is no longer stored`,
        operation: "consumer.next",
      });
    }
    let d = this.#deliveries.get(seq);
    if (!d) {
      d = { count: 0, state: "leased", timer: undefined };
      this.#deliveries.set(seq, d);
    }
    d.count++;
    d.state = "leased";
    this.#arm(seq, d, this.#settings.ackWaitMs);
    return new MemoryTaskLease(this, seq, jobIdOfSubject(task.subject), task.body, d.count);
  }

  /** One timer per delivery: the lease's end, or the end of a nak's delay; either releases it. */
  #arm(seq: number, d: Delivery, ms: number): void {
    this.#disarm(d);
    d.timer = this.#stream.clock.setTimeout(() => {
      d.timer = undefined;
      if (this.#deliveries.get(seq) !== d || (d.state !== "leased" && d.state !== "delayed")) return;
      d.state = "ready";
      this.#redeliver.push(seq);
      this.pump();
    }, ms);
  }

  #disarm(d: Delivery): void {
    if (d.timer === undefined) return;
    this.#stream.clock.clearTimeout(d.timer);
    d.timer = undefined;
  }
}

/** One delivery of a task, as the port hands it to a worker; it names its job (a lane serves many). */
class MemoryTaskLease implements LaneLease {
  readonly jobId: string;
  readonly body: string;
  readonly deliveryCount: number;
  readonly #consumer: MemoryConsumer;
  readonly #seq: number;

  constructor(consumer: MemoryConsumer, seq: number, jobId: string, body: string, deliveryCount: number) {
    this.#consumer = consumer;
    this.#seq = seq;
    this.jobId = jobId;
    this.body = body;
    this.deliveryCount = deliveryCount;
  }

  get seq(): number {
    return this.#seq;
  }

  ack(): void {
    this.#consumer.settle(this.#seq);
  }

  nak(delayMs?: number): void {
    this.#consumer.release(this.#seq, delayMs ?? 0);
  }

  /** A memory consumer keeps no request of a closed loop: released as `nak` releases. */
  handBack(delayMs?: number): void {
    this.nak(delayMs);
  }

  term(): void {
    this.#consumer.settle(this.#seq);
  }

  /** A memory consumer keeps no request of a closed loop: the copy is stored at once. */
  putBack(_keepEveryMs: number, wanted: () => boolean = () => true): Promise<boolean> {
    return Promise.resolve(wanted() && this.#consumer.putBack(this.#seq));
  }

  working(): void {
    this.#consumer.extend(this.#seq);
  }
}
