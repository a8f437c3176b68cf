import type { Clock } from "../../kernel/clock.ts";

/** JetStream's default duplicate window, and the one jetstate sets on its streams. */
const duplicateWindowMs = 120_000;

/**
 * Message ids seen within the duplicate window. A message whose id was seen
 * is dropped (a JetStream PubAck with `duplicate: true`), even when the first
 * one has since been acked or purged: the server keeps ids independently of
 * the messages (checked on nats-server 2.9.10).
 */
export class DedupeWindow {
  readonly #clock: Clock;
  /**
   * Id → when it was first seen, and the sequence its message took; insertion order is time
   * order, so expiry pops from the front.
   */
  readonly #seen = new Map<string, { readonly at: number; readonly seq: number }>();

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** True when `msgId` is new (and remembers it, its message stored as `seq`); false for a duplicate. */
  admit(msgId: string, seq = 0): boolean {
    const now = this.#clock.now();
    for (const [id, { at }] of this.#seen) {
      if (at + duplicateWindowMs > now) break;
      this.#seen.delete(id);
    }
    if (this.#seen.has(msgId)) return false;
    this.#seen.set(msgId, { at: now, seq });
    return true;
  }

  /** The sequence the message first seen with `msgId` took (as a duplicate's PubAck names it). */
  seqOf(msgId: string): number | undefined {
    return this.#seen.get(msgId)?.seq;
  }
}

export interface LoggedMessage {
  readonly seq: number;
  readonly body: string;
  readonly at: number;
}

/**
 * A limits-retention stream: messages per subject in sequence order, one
 * sequence counter for the stream, a max age, a duplicate window. Results and
 * dead letters live in one each. Expired messages are dropped when read,
 * so it needs no timer.
 */
export class MessageLog {
  readonly #clock: Clock;
  readonly #maxAgeMs: number;
  readonly #dedupe: DedupeWindow;
  readonly #subjects = new Map<string, LoggedMessage[]>();
  readonly #subjectOf = new Map<number, string>();
  readonly #listeners = new Map<string, Set<() => void>>();
  #seq = 0;

  constructor(clock: Clock, maxAgeMs: number) {
    this.#clock = clock;
    this.#maxAgeMs = maxAgeMs;
    this.#dedupe = new DedupeWindow(clock);
  }

  /**
   * Stores the message unless its id is a duplicate; answers its sequence, or a duplicate's
   * first's (as a JetStream PubAck does).
   */
  append(subject: string, body: string, msgId: string): number {
    if (!this.#dedupe.admit(msgId, this.#seq + 1)) return this.#dedupe.seqOf(msgId) ?? 0;
    const message: LoggedMessage = { seq: ++this.#seq, body, at: this.#clock.now() };
    let messages = this.#subjects.get(subject);
    if (!messages) {
      messages = [];
      this.#subjects.set(subject, messages);
    }
    messages.push(message);
    this.#subjectOf.set(message.seq, subject);
    for (const listener of [...(this.#listeners.get(subject) ?? [])]) listener();
    return message.seq;
  }

  /** The subject's messages now, oldest first (the live array: it grows as messages arrive). */
  read(subject: string): readonly LoggedMessage[] {
    const messages = this.#subjects.get(subject);
    if (!messages) return [];
    const cutoff = this.#clock.now() - this.#maxAgeMs;
    let expired = 0;
    while ((messages[expired]?.at ?? Number.POSITIVE_INFINITY) <= cutoff) expired++;
    if (expired > 0) {
      for (const m of messages.splice(0, expired)) this.#subjectOf.delete(m.seq);
      if (messages.length === 0) this.#subjects.delete(subject);
    }
    return messages;
  }

  /** Subjects that hold messages. */
  subjects(): string[] {
    return [...this.#subjects.keys()].filter((s) => this.read(s).length > 0);
  }

  purge(subject: string): void {
    for (const m of this.#subjects.get(subject) ?? []) this.#subjectOf.delete(m.seq);
    this.#subjects.delete(subject);
  }

  /** Removes one message by sequence; an unknown one is ignored. */
  delete(seq: number): void {
    const subject = this.#subjectOf.get(seq);
    if (subject === undefined) return;
    this.#subjectOf.delete(seq);
    const messages = this.#subjects.get(subject) ?? [];
    const index = indexAfter(messages, seq - 1);
    if (messages[index]?.seq === seq) messages.splice(index, 1);
    if (messages.length === 0) this.#subjects.delete(subject);
  }

  /** Resolves once the subject holds a message after `seq`, or when `signal` aborts. */
  next(subject: string, seq: number, signal: AbortSignal): Promise<void> {
    const messages = this.read(subject);
    if (signal.aborted || (messages.at(-1)?.seq ?? seq) > seq) {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      let listeners = this.#listeners.get(subject);
      if (!listeners) {
        listeners = new Set();
        this.#listeners.set(subject, listeners);
      }
      const done = () => {
        listeners.delete(done);
        if (listeners.size === 0 && this.#listeners.get(subject) === listeners)
          this.#listeners.delete(subject);
        signal.removeEventListener("abort", done);
        resolve();
      };
      listeners.add(done);
      signal.addEventListener("abort", done, { once: true });
    });
  }
}

/** Index of the first message with a sequence above `seq` (messages are in sequence order). */
export const indexAfter = (messages: readonly LoggedMessage[], seq: number): number => {
  let lo = 0;
  let hi = messages.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    // `mid` < `hi` ≤ length: always a message.
    if ((messages[mid]?.seq ?? Number.POSITIVE_INFINITY) <= seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
};
