import { AckPolicy, DeliverPolicy } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { superviseLoop } from "../../effects/supervise-loop.ts";
import { TransientBrokerError, workOver } from "../../kernel/errors.ts";
import type { Logger } from "../../kernel/logger.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import type { NatsContext } from "./nats-context.ts";
import { closeWhenEnded, pullLoop } from "./pull-loops.ts";
import { deleteConsumer, inactiveThresholdMs, QueueFeed } from "./queue-results-feed.ts";
import { JobResultsReader, type StoredResultsSource } from "./results-reader.ts";
import { nanos } from "./streams.ts";
import { nextOnSubject } from "./subject-messages.ts";

/** How long a queue's feed runs on with no job of the queue read here before it stops. */
const feedIdleMs = 30_000;

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
        let through = false;
        try {
          for await (const m of messages) {
            onMessage({ seq: m.seq, data: m.data }, m.info.pending);
            through = m.seq >= toSeq || m.info.pending === 0;
            if (through) break;
          }
        } finally {
          stopped.close();
          stopped.dispose();
        }
        // The messages ended short of `toSeq` without an error: their client closed (its
        // reconnects given up, or reset). Not caught up: the caller reads again from after the
        // last message handed, on the next client (taken for caught up, the rest was never read).
        if (!through && !signal.aborted)
          throw new TransientBrokerError({
            message: `catch-up of ${subject} ended before sequence ${toSeq} (its client closed)`,
            operation: "job.results.read",
          });
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
