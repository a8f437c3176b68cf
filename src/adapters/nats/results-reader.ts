import type { Logger } from "../../kernel/logger.ts";

/** One stored results message: its sequence in the results stream and its body. */
export interface StoredResults {
  readonly seq: number;
  readonly data: Uint8Array;
}

/** Where a job's reader finds what was stored before it listened: the NATS calls, or a test's fakes. */
export interface StoredResultsSource {
  /** Sequence of the job's last stored results message; 0 when none is stored. */
  lastStored(signal: AbortSignal): Promise<number>;
  /**
   * Hands over the job's stored messages from `fromSeq` up to `toSeq`, in
   * order, each with how many more of the job's are stored after it; returns
   * once it handed `toSeq`, once nothing more is stored (`toSeq` expired
   * meanwhile), or when `signal` aborts.
   */
  read(
    fromSeq: number,
    toSeq: number,
    onMessage: (message: StoredResults, pending: number) => void,
    signal: AbortSignal,
  ): Promise<void>;
}

/** A catch-up stopped by `reset()`: the round starts again on the new stream. */
export class ReaderReset extends Error {
  constructor() {
    super("results stream replaced during the catch-up; reading it again");
    this.name = "ReaderReset";
  }
}

/**
 * One `readResults` call on NATS: what its queue's feed delivers for the
 * job, joined with what was stored before it listened.
 *
 * **Why no gap and no duplicate.** The reader is registered with its queue's
 * feed first, and from then on every message the feed reads for the job is
 * delivered to it (buffered until it is live). Only then, once the feed has
 * fixed where it starts, does `catchUp` ask for the job's last stored
 * sequence L. The feed reads the stream in order and without holes from a
 * sequence P (the next it will read when the reader registered) on, and
 * every message below P was stored before the registration, so before the
 * question: L ≥ P − 1. The catch-up reads the job's messages up to L; the
 * feed hands the reader every one from P on. Together they cover every
 * sequence, and where they overlap (P..L) the catch-up's copy is handed and
 * the feed's dropped, by sequence: whatever is handed has a sequence above
 * the last one handed. Dropping by sequence, not leaving it to the job
 * machine's bitmap, matters: the bitmap ignores a task answered twice, but a
 * redrive marker (`{"i","redrive":true}`) followed by a stale copy of the
 * dead answer it forgets would count that task dead again.
 *
 * `pending` keeps the port's meaning: while catching up, how many more of
 * the job's messages are due (so the job's first replay is handed over as
 * one batch); 0 for the last one, and for every live one after it.
 */
export class JobResultsReader {
  /** Sequence of the last message handed over; nothing at or below it is handed again. */
  #handed = 0;
  /** Caught up: the feed's messages are handed at once instead of buffered. */
  #live = false;
  #buffer: StoredResults[] = [];
  /** The catch-up running now, stopped by `reset()`. */
  #round: AbortController | undefined;
  /** What the last message handed in this catch-up said was still due (-1: none handed yet). */
  #lastPending = -1;
  readonly #onMessage: (data: Uint8Array, pending: number) => void;
  readonly #onCaughtUp: (() => void) | undefined;
  readonly #log: Logger;

  constructor(
    onMessage: (data: Uint8Array, pending: number) => void,
    onCaughtUp: (() => void) | undefined,
    log: Logger,
  ) {
    this.#onMessage = onMessage;
    this.#onCaughtUp = onCaughtUp;
    this.#log = log;
  }

  /** A message of the job as the feed reads it, in stream order. */
  deliver(message: StoredResults): void {
    if (!this.#live) this.#buffer.push(message);
    else if (message.seq > this.#handed) this.#hand(message, 0);
  }

  /**
   * The results stream was replaced (a server back with an empty store):
   * sequences start again from 1 and the feed reads the new stream from its
   * start. A catch-up in progress is stopped (`ReaderReset`) to start again.
   */
  reset(): void {
    this.#handed = 0;
    this.#buffer = [];
    this.#round?.abort();
  }

  /**
   * Catches up with what is stored (call only once the feed has fixed where
   * it starts), hands over what the feed buffered meanwhile, and goes live.
   * Returns false when `signal` aborted first; throws `ReaderReset` when
   * `reset()` stopped it, or what `source` failed with: the caller runs it
   * again, from after the last message handed. No `source`: nothing of the
   * job was stored before the feed's start (a fresh job's), and nothing is
   * read (no round, no signal made).
   */
  async catchUp(source: StoredResultsSource | undefined, signal: AbortSignal): Promise<boolean> {
    if (this.#live) return true;
    if (source === undefined) {
      if (signal.aborted) return false;
      this.live();
      return true;
    }
    const round = new AbortController();
    this.#round = round;
    const stop = AbortSignal.any([signal, round.signal]);
    this.#lastPending = -1;
    try {
      const last = await source.lastStored(stop);
      if (!stop.aborted && last > this.#handed)
        await source.read(
          this.#handed + 1,
          last,
          (message, pending) => {
            if (message.seq <= this.#handed || message.seq > last) return;
            this.#hand(message, message.seq === last ? this.#bufferedAfter(last) : Math.max(1, pending));
          },
          stop,
        );
      if (round.signal.aborted) throw new ReaderReset();
      if (signal.aborted) return false;
      this.#goLive();
      return true;
    } finally {
      this.#round = undefined;
    }
  }

  /**
   * Live at once, with nothing read from the server: nothing of the job was
   * stored before the feed's start (a fresh job's, on a feed that had fixed
   * where it reads).
   */
  live(): void {
    if (this.#live) return;
    this.#lastPending = -1;
    this.#goLive();
  }

  /** Hands over what the feed buffered meanwhile, and hands the feed's messages at once from now on. */
  #goLive(): void {
    const rest = this.#buffer.filter((m) => m.seq > this.#handed);
    this.#buffer = [];
    for (const [k, message] of rest.entries()) this.#hand(message, rest.length - 1 - k);
    this.#live = true;
    // Nothing handed, or the last one said more was due (it expired meanwhile): say it now.
    if (this.#lastPending !== 0) this.#onCaughtUp?.();
  }

  #bufferedAfter(seq: number): number {
    let n = 0;
    for (const m of this.#buffer) if (m.seq > seq) n++;
    return n;
  }

  #hand(message: StoredResults, pending: number): void {
    this.#handed = message.seq;
    this.#lastPending = pending;
    try {
      this.#onMessage(message.data, pending);
    } catch (error) {
      // One reader's failure must not stop the feed every job of the queue shares; the message
      // counts as handed, as a restarted per-job reader went on after it.
      this.#log.warn({ err: error }, "results reader failed on a message; going on after it");
    }
  }
}
