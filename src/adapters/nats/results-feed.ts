import {
  AckPolicy,
  type ConsumerConfig,
  DeliverPolicy,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { superviseLoop } from "../../effects/supervise-loop.ts";
import { workOver } from "../../kernel/errors.ts";
import type { Logger } from "../../kernel/logger.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import type { NatsContext } from "./nats-context.ts";
import { closeWhenEnded, pullLoop } from "./pull-loops.ts";
import { JobResultsReader, type StoredResults, type StoredResultsSource } from "./results-reader.ts";
import { nanos } from "./streams.ts";
import { nextOnSubject } from "./subject-messages.ts";

/** How long a queue's feed runs on with no job of the queue read here before it stops. */
const feedIdleMs = 30_000;

/** A consumer left by a client that went away is removed by the server after this. */
const inactiveThresholdMs = 60_000;

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
class QueueFeed {
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
const deleteConsumer = (jsm: JetStreamManager, stream: string, name: string, log: Logger): void => {
  jsm.consumers
    .delete(stream, name)
    .catch((error: unknown) =>
      log.debug({ err: error, consumer: name }, "results consumer not deleted; it expires"),
    );
};

/**
 * How many stored messages a catch-up reads one by one (a get of the next
 * message on the job's subject each) before it makes a consumer for the
 * rest: a consumer's create and delete cost the server ~2 ms of CPU, a get
 * ~0.1 ms, and most jobs read after the fact (a small job's `results()`
 * once it is done) have one or two messages.
 */
const directReads = 8;

/**
 * What was stored for one job before its reader listened, read on `nc`: its
 * last stored message, by one request (`STREAM.MSG.GET`, last by subject),
 * and, only when there is one the reader has not handed, the first
 * `directReads` messages by one get each, then a throw-away consumer
 * filtered on the job's subject for the rest, deleted once caught up.
 */
const storedOn = (
  broker: NatsJobBroker,
  nc: NatsConnection,
  queue: string,
  jobId: string,
  log: Logger,
): StoredResultsSource => {
  const stream = broker.names.resultsStream;
  const subject = broker.names.resultsSubject(queue, jobId);
  const failed = (error: unknown) => broker.setups.afterFailure(nc, error, "job.results.read");
  return {
    lastStored: async () => {
      try {
        const { jsm } = await broker.handles(nc);
        const last = await jsm.streams.getMessage(stream, { last_by_subj: subject });
        return last?.seq ?? 0;
      } catch (error) {
        throw failed(error);
      }
    },
    read: async (from, toSeq, onMessage, signal) => {
      let made: (() => void) | undefined;
      let fromSeq = from;
      try {
        const { js, jsm } = await broker.handles(nc);
        for (let n = 0; n < directReads; n++) {
          if (signal.aborted) return;
          const next = await nextOnSubject(jsm, stream, subject, fromSeq);
          // None left (the last one expired meanwhile), or past what this catch-up covers.
          if (!next || next.seq > toSeq) return;
          onMessage({ seq: next.seq, data: next.data }, next.seq === toSeq ? 0 : 1);
          if (next.seq === toSeq) return;
          fromSeq = next.seq + 1;
        }
        const info = await jsm.consumers.add(stream, {
          filter_subject: subject,
          ack_policy: AckPolicy.None,
          inactive_threshold: nanos(inactiveThresholdMs),
          ...(fromSeq > 1
            ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: fromSeq }
            : { deliver_policy: DeliverPolicy.All }),
        });
        made = () => deleteConsumer(jsm, stream, info.name, log);
        if (info.num_pending === 0) return;
        const messages = await js.consumers
          .getConsumerFromInfo(info)
          .consume({ max_messages: 256, ...pullLoop });
        const stopped = closeWhenEnded(messages, nc, signal);
        try {
          for await (const m of messages) {
            onMessage({ seq: m.seq, data: m.data }, m.info.pending);
            if (m.seq >= toSeq || m.info.pending === 0) break;
          }
        } finally {
          stopped.close();
          stopped.dispose();
        }
      } catch (error) {
        throw failed(error);
      } finally {
        made?.();
      }
    },
  };
};

/**
 * The results reading of one NATS broker: a feed per queue, started with the
 * first reader of the queue, as one of the runtime's loops (`rt.stop()`
 * waits for it).
 */
export class ResultsFeeds {
  readonly #feeds = new Map<string, QueueFeed>();
  readonly #core: NatsContext;
  readonly #broker: NatsJobBroker;
  readonly #idleMs: number;
  readonly #log: Logger;

  constructor(core: NatsContext, broker: NatsJobBroker, log: Logger, idleMs = feedIdleMs) {
    this.#core = core;
    this.#broker = broker;
    this.#log = log;
    this.#idleMs = idleMs;
  }

  /**
   * The port's `readResults`: the job's messages in order from the start,
   * until `signal` aborts (the callers' signals abort with the runtime: a
   * `results()` reader's). `follow` until the signal aborts.
   */
  read(
    queue: string,
    jobId: string,
    onMessage: (data: Uint8Array, pending: number) => void,
    signal: AbortSignal,
    onCaughtUp?: () => void,
    fresh = false,
  ): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let stop: (() => void) | undefined;
      let over = false;
      const end = () => {
        if (over) return;
        over = true;
        stop?.();
        resolve();
      };
      // Listening first: the caller may abort from `onCaughtUp`, which a fresh reader calls
      // before `follow` returns.
      signal.addEventListener("abort", end, { once: true });
      stop = this.follow(queue, jobId, onMessage, onCaughtUp, fresh, (error) => {
        signal.removeEventListener("abort", end);
        if (over) return;
        over = true;
        reject(error);
      });
      if (over) stop();
    });
  }

  /**
   * The port's `followResults`: registered with the queue's feed first; then
   * caught up (`JobResultsReader.catchUp`, run again after a failure until it
   * is done); then live, until the function returned is called. Live, a
   * reader is only its registration: no signal, no async function suspended
   * for the job's life (an abort signal is ~1 KB of heap: its own hidden
   * class, two maps).
   *
   * `fresh`: nothing of the job is stored yet (its submit has not published
   * a task). Registered with a feed that has fixed where it reads, the reader
   * is handed every message of the job from the feed: no catch-up, no
   * request (a small job's submit made one, and its server a second for the
   * audit advisory). A feed still starting (the queue's first job here) fixes
   * its start later, and the job may be answered before: that one catches up.
   */
  follow(
    queue: string,
    jobId: string,
    onMessage: (data: Uint8Array, pending: number) => void,
    onCaughtUp: (() => void) | undefined,
    fresh: boolean,
    onFailed: (error: unknown) => void,
  ): () => void {
    const reader = new JobResultsReader(onMessage, onCaughtUp, this.#log);
    const feed = this.#join(queue);
    const leave = feed.register(jobId, reader);
    if (fresh && feed.positioned) {
      reader.live();
      return leave;
    }
    // The catch-up's own stop, dropped once it is done (a live reader holds no signal).
    let reading: AbortController | undefined = new AbortController();
    this.#catchUp(feed, jobId, reader, reading.signal).then(
      () => {
        reading = undefined;
      },
      (error: unknown) => {
        reading = undefined;
        leave();
        onFailed(error);
      },
    );
    return () => {
      reading?.abort(workOver);
      leave();
    };
  }

  /**
   * What the server stored of the job before its reader registered, read once the feed has
   * fixed where it starts. One of the runtime's loops while it reads (`rt.stop()` waits for
   * it); a live reader is only a registration.
   */
  #catchUp(feed: QueueFeed, jobId: string, reader: JobResultsReader, signal: AbortSignal): Promise<unknown> {
    const { queue } = feed;
    const reading = superviseLoop(
      this.#core.connection,
      async (nc, s) => {
        if (await feed.started(s))
          await reader.catchUp(storedOn(this.#broker, nc, queue, jobId, this.#log), s);
        return "done";
      },
      signal,
      { name: `results:${jobId}`, log: this.#log },
    );
    this.#core.loops.track(`results:${jobId}`, () => reading);
    return reading;
  }

  /** The queue's feed, started now if it does not run. */
  #join(queue: string): QueueFeed {
    const running = this.#feeds.get(queue);
    if (running) return running;
    const feed: QueueFeed = new QueueFeed(
      queue,
      this.#broker,
      this.#idleMs,
      () => {
        if (this.#feeds.get(queue) === feed) this.#feeds.delete(queue);
      },
      this.#log,
    );
    this.#feeds.set(queue, feed);
    this.#core.loops.run(`results-feed:${queue}`, (signal) => feed.run(this.#core.connection, signal));
    return feed;
  }
}
