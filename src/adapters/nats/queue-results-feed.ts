import {
  AckPolicy,
  type ConsumerConfig,
  DeliverPolicy,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { superviseLoop } from "../../effects/supervise-loop.ts";
import type { Logger } from "../../kernel/logger.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import type { NatsContext } from "./nats-context.ts";
import { closeWhenEnded, pullLoop } from "./pull-loops.ts";
import type { JobResultsReader, StoredResults } from "./results-reader.ts";
import { nanos } from "./streams.ts";

/** A consumer left by a client that went away is removed by the server after this. */
export const inactiveThresholdMs = 60_000;

/**
 * The results of every job of one queue that this runtime reads, from one
 * consumer of `<prefix>.results.<queue>.>` (no acks), handed to the readers
 * registered for each job (the last token of the subject). Instead of a
 * consumer per job (a create costs 1–3.5 ms on nats-server 2.9), a job
 * costs a registration and one direct read of its last stored message.
 *
 * It starts at the stream's end ("new") and keeps reading in order from
 * there for good: a round that ends (client replaced, consumer lost) starts
 * again after the last message it read; a stream replaced meanwhile (a
 * server back with an empty store: created at another time, or its last
 * sequence below where the feed was) is read from its start, and every
 * registered reader is told (`JobResultsReader.reset`). It stops once no
 * job of the queue was registered for `idleMs`, or with the runtime.
 */
export class QueueFeed {
  /** Each job's readers: one alone (a job's own, nearly always), a set when there are more. */
  readonly #readers = new Map<string, JobResultsReader | Set<JobResultsReader>>();
  #registered = 0;
  /** The stream sequence the feed reads next; undefined until its first consumer fixes where it starts. */
  #next: number | undefined;
  /** When the stream the feed reads was created: another time is another stream. */
  #streamCreated: string | undefined;
  #markStarted: () => void = () => undefined;
  readonly #started = new Promise<void>((resolve) => {
    this.#markStarted = resolve;
  });
  readonly #stop = new AbortController();
  #idleTimer: NodeJS.Timeout | undefined;
  readonly #subjectBase: string;
  readonly #broker: NatsJobBroker;
  readonly #idleMs: number;
  /** Called once the feed stops (idle, or with the runtime): a new reader of the queue starts a new one. */
  readonly #onEnd: () => void;
  readonly #log: Logger;

  constructor(
    readonly queue: string,
    broker: NatsJobBroker,
    idleMs: number,
    onEnd: () => void,
    log: Logger,
  ) {
    this.#broker = broker;
    this.#idleMs = idleMs;
    this.#onEnd = onEnd;
    this.#log = log;
    this.#subjectBase = broker.names.resultsSubject(queue, "");
  }

  /** Hands `reader` every message of the job the feed reads from now on; the function returned ends that. */
  register(jobId: string, reader: JobResultsReader): () => void {
    clearTimeout(this.#idleTimer);
    this.#registered++;
    const there = this.#readers.get(jobId);
    if (there === undefined) this.#readers.set(jobId, reader);
    else if (there instanceof Set) there.add(reader);
    else this.#readers.set(jobId, new Set([there, reader]));
    let registered = true;
    return () => {
      if (!registered) return;
      registered = false;
      const now = this.#readers.get(jobId);
      if (now === reader) this.#readers.delete(jobId);
      else if (now instanceof Set) {
        now.delete(reader);
        if (now.size === 0) this.#readers.delete(jobId);
      }
      if (--this.#registered === 0) {
        this.#idleTimer = setTimeout(() => this.#stopIfIdle(), this.#idleMs);
        this.#idleTimer.unref();
      }
    };
  }

  /** The feed has fixed where it reads from: a reader registered now is handed every message stored from now on. */
  get positioned(): boolean {
    return this.#next !== undefined;
  }

  /** True once the feed has fixed where it starts; false when `signal` aborts first. */
  started(signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const aborted = () => resolve(false);
      signal.addEventListener("abort", aborted, { once: true });
      void this.#started.then(() => {
        signal.removeEventListener("abort", aborted);
        resolve(true);
      });
    });
  }

  /** The feed's loop, until `signal` aborts or it stops when idle. */
  async run(port: NatsContext["connection"], signal: AbortSignal): Promise<void> {
    try {
      await superviseLoop(port, (nc, s) => this.#round(nc, s), AbortSignal.any([signal, this.#stop.signal]), {
        name: `results-feed:${this.queue}`,
        log: this.#log,
      });
    } finally {
      clearTimeout(this.#idleTimer);
      this.#onEnd();
    }
  }

  #stopIfIdle(): void {
    if (this.#registered > 0) return;
    this.#log.debug({ queue: this.queue }, "no job of the queue read for a while; its results feed stops");
    this.#onEnd();
    this.#stop.abort();
  }

  async #round(nc: NatsConnection, signal: AbortSignal): Promise<void> {
    const broker = this.#broker;
    const stream = broker.names.resultsStream;
    let made: (() => void) | undefined;
    try {
      const { js, jsm } = await broker.handles(nc);
      const before = await jsm.streams.info(stream);
      const replaced =
        this.#next !== undefined &&
        (before.created !== this.#streamCreated || before.state.last_seq < this.#next - 1);
      if (replaced) this.#readFromStart(before.created);
      const info = await jsm.consumers.add(stream, {
        filter_subject: broker.names.resultsSubject(this.queue, ">"),
        ack_policy: AckPolicy.None,
        inactive_threshold: nanos(inactiveThresholdMs),
        ...startAt(this.#next),
      });
      made = () => deleteConsumer(jsm, stream, info.name, this.#log);
      // Replaced between the two looks: the consumer may sit on the old stream. Start again.
      if ((await jsm.streams.info(stream)).created !== before.created)
        throw new Error("results stream replaced while its feed started");
      this.#streamCreated = before.created;
      if (this.#next === undefined) {
        // "new" starts after the stream's last message at the consumer's creation.
        this.#next = info.delivered.stream_seq + 1;
        this.#markStarted();
      }
      const messages = await js.consumers
        .getConsumerFromInfo(info)
        .consume({ max_messages: 256, ...pullLoop });
      const stopped = closeWhenEnded(messages, nc, signal);
      let delivered = info.delivered.consumer_seq;
      try {
        for await (const m of messages) {
          // No acks: a delivery lost on the way (a slow client) would be a hole for good.
          if (m.info.deliverySequence !== ++delivered)
            throw new Error(
              `results feed missed deliveries (got ${m.info.deliverySequence}, expected ${delivered})`,
            );
          this.#dispatch(m);
          this.#next = m.seq + 1;
        }
      } finally {
        stopped.dispose();
      }
    } catch (error) {
      throw broker.setups.afterFailure(nc, error, "job.results.feed");
    } finally {
      made?.();
    }
  }

  #dispatch(m: JsMsg): void {
    const readers = this.#readers.get(m.subject.slice(this.#subjectBase.length));
    if (!readers) return;
    const message: StoredResults = { seq: m.seq, data: m.data };
    if (readers instanceof Set) for (const reader of readers) reader.deliver(message);
    else readers.deliver(message);
  }

  /** The stream was replaced: its sequences start again, and so do the feed and its readers. */
  #readFromStart(created: string): void {
    this.#log.warn(
      { queue: this.queue },
      "results stream replaced (a store reset?); its feed reads it from the start",
    );
    this.#next = 1;
    this.#streamCreated = created;
    for (const readers of this.#readers.values())
      if (readers instanceof Set) for (const reader of readers) reader.reset();
      else readers.reset();
  }
}

/** Where a feed's consumer starts: the stream's end the first time, else where the feed was. */
const startAt = (next: number | undefined): Partial<ConsumerConfig> => {
  if (next === undefined) return { deliver_policy: DeliverPolicy.New };
  if (next <= 1) return { deliver_policy: DeliverPolicy.All };
  return { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: next };
};

/** Not awaited: a loop's end need not wait for the server; a consumer left behind expires. */
export const deleteConsumer = (jsm: JetStreamManager, stream: string, name: string, log: Logger): void => {
  jsm.consumers
    .delete(stream, name)
    .catch((error: unknown) =>
      log.debug({ err: error, consumer: name }, "results consumer not deleted; it expires"),
    );
};
