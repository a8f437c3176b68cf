import {
  AckPolicy,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  RetentionPolicy,
  StorageType,
  type StreamInfo,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { sleep } from "../../effects/supervise-loop.ts";
import { jobIdOfSubject } from "../../kernel/cleanup-plan.ts";
import { decodeDeadLetter, encodeDeadLetter } from "../../kernel/dead-letter.ts";
import { PermanentBrokerError, Retry } from "../../kernel/errors.ts";
import { answerSubmit, ofOtherSubmit } from "../../kernel/job-record.ts";
import type { Logger } from "../../kernel/logger.ts";
import { decodeTask } from "../../kernel/wire.ts";
import type { DeadLetter, UnhandledExhausted } from "../dead-letters.ts";
import { queueOfStream } from "../names.ts";
import { classifyNatsError } from "./classify-error.ts";
import {
  deadLetter,
  type Exhausted,
  giveUp,
  type MaxDeliveriesAdvisory,
  removeTask,
} from "./exhausted-task.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import type { NatsContext } from "./nats-context.ts";
import { closeWhenEnded, isConsumerGone, pullLoop } from "./pull-loops.ts";
import { deadLettersConsumer } from "./queue-streams.ts";
import {
  duplicateWindowWithin,
  ensureStream,
  isNotFound,
  nanos,
  streamNamesStartingWith,
} from "./streams.ts";
import { deleteMessages } from "./subject-messages.ts";

export type { DeadLetter } from "../dead-letters.ts";

/**
 * A dead-letter stream made by 0.2 captures `<prefix>.dead.*`, one token
 * short of `<prefix>.dead.<queue>.<jobId>`: every store would fail with no
 * stream to take it, so it is refused once, with the fix, rather than on
 * every dead task. Existing streams are never changed by jetstate.
 */
const assertCaptures = (stream: StreamInfo, subjects: string): void => {
  if (stream.config.subjects?.includes(subjects)) return;
  throw new PermanentBrokerError({
    message:
      `stream ${stream.config.name} captures ${JSON.stringify(stream.config.subjects ?? [])}, not ${subjects} ` +
      `(made by jetstate 0.2): run \`nats stream edit ${stream.config.name} --subjects '${subjects}'\``,
    operation: "dead-letters.setup",
  });
};

/** How often the server is asked for queues set up by other runtimes, whose advisories need processing too. */
const queueDiscoveryMs = 5000;

const decoder = new TextDecoder();

/**
 * Dead letters on NATS. JetStream's MAX_DELIVERIES advisory is sent once, and
 * only when the server next tries to deliver: so each queue's advisories are
 * captured in a work-queue stream of the queue's own (nothing is missed while
 * no runtime listens; set up with the queue's tasks stream, `QueueStreams`)
 * and each is processed exactly once by whichever runtime pulls it: the
 * task's message is copied to the dead-letter subject with its payload, a
 * `dead` result is stored for the job, and the message leaves the tasks stream.
 */
export class NatsDeadLetters {
  readonly #core: NatsContext;
  readonly #broker: NatsJobBroker;
  readonly #maxAgeMs: number;
  readonly #ready: (nc: NatsConnection, make: () => Promise<JetStreamManager>) => Promise<JetStreamManager>;
  /** The queues `ensure` set up on each client: a submit's call is then no operation at all. */
  readonly #ensured: WeakMap<NatsConnection, Set<string>>;

  constructor(core: NatsContext, broker: NatsJobBroker, maxAgeMs: number) {
    this.#core = core;
    this.#broker = broker;
    this.#maxAgeMs = maxAgeMs;
    this.#ready = broker.setups.once();
    this.#ensured = broker.setups.cache();
  }

  /** The dead-letter stream (shared by every queue), set up once per client. */
  #setup(nc: NatsConnection): Promise<JetStreamManager> {
    return this.#ready(nc, async () => {
      const { jsm } = await this.#broker.handles(nc);
      const n = this.#broker.names;
      const subjects = `${this.#core.options.prefix}.dead.>`;
      const stream = await ensureStream(
        jsm,
        {
          name: n.deadStream,
          subjects: [subjects],
          retention: RetentionPolicy.Limits,
          storage: StorageType.File,
          ...duplicateWindowWithin(this.#maxAgeMs),
        },
        this.#broker.replicas,
      );
      assertCaptures(stream, subjects);
      return jsm;
    });
  }

  /** Creates the dead-letter stream unless it exists (`rt.admin.provision()`). */
  provision(): Promise<void> {
    return this.#broker.run("dead-letters.provision", async (nc) => {
      await this.#setup(nc);
    });
  }

  /**
   * Makes sure the queue's advisories are captured from now on (before any
   * job of it could exhaust a task). Every submit asks: once done on the
   * current client it answers at once, without an operation (~0.2 ms of a
   * small job's submit); forgotten with the client's other setups.
   */
  ensure(queue: string): Promise<void> {
    const current = this.#core.connection.current();
    if (current && this.#ensured.get(current)?.has(queue)) return Promise.resolve();
    return this.#broker.run("dead-letters.setup", async (nc) => {
      await this.#setup(nc);
      await this.#broker.queueHandles(nc, queue);
      let queues = this.#ensured.get(nc);
      if (!queues) {
        queues = new Set();
        this.#ensured.set(nc, queues);
      }
      queues.add(queue);
    });
  }

  /** Stores a dead letter; its id makes a retried store land once. Its sequence (a duplicate's PubAck names the first's). */
  store(letter: Omit<DeadLetter, "seq" | "taskId">, msgId: string): Promise<number> {
    return this.#broker.run("dead-letters.store", async (nc) => {
      await this.#setup(nc);
      const subject = this.#broker.names.deadSubject(letter.queue, letter.jobId);
      return (await jetstream(nc).publish(subject, encodeDeadLetter(letter), { msgID: msgId })).seq;
    });
  }

  list(queue: string, jobId: string): Promise<DeadLetter[]> {
    return this.#broker.run("dead-letters.list", async (nc) => {
      const jsm = await this.#setup(nc);
      const subject = this.#broker.names.deadSubject(queue, jobId);
      const info = await jsm.streams.info(this.#broker.names.deadStream, { subjects_filter: subject });
      const count = info.state.subjects?.[subject] ?? 0;
      if (count === 0) return [];
      const consumer = await jsm.consumers.add(this.#broker.names.deadStream, {
        filter_subject: subject,
        ack_policy: AckPolicy.None,
        inactive_threshold: nanos(30_000),
      });
      const letters: DeadLetter[] = [];
      try {
        const reader = await jetstream(nc).consumers.get(this.#broker.names.deadStream, consumer.name);
        const batch = await reader.fetch({ max_messages: count, expires: 2000 });
        for await (const m of batch) {
          letters.push({ ...decodeDeadLetter(m.string()), seq: m.seq });
          if (m.info.pending === 0) break;
        }
      } finally {
        // An ephemeral consumer: the server removes one left behind once it is inactive.
        await jsm.consumers.delete(this.#broker.names.deadStream, consumer.name).catch(() => undefined);
      }
      return letters;
    });
  }

  /** Deletes letters by sequence (erased: durable), windowed, with a deadline that grows with them. */
  remove(seqs: readonly number[]): Promise<void> {
    return this.#broker.run(
      "dead-letters.remove",
      // Removed already (the same redrive made twice at once, or retried): nothing to do.
      async (nc) => deleteMessages(await this.#setup(nc), this.#broker.names.deadStream, seqs),
      { timeoutMs: Math.max(30_000, seqs.length * 2) },
    );
  }

  /**
   * Processes the advisories of every queue, one loop per queue
   * (`processQueue`, which keeps itself alive), until `signal` aborts. Queues
   * are found by their advisories streams: listed now and every
   * `queueDiscoveryMs` (queues other runtimes set up), and at once when this
   * runtime sets one up. Resolves once every loop has ended.
   */
  async processAll(
    signal: AbortSignal,
    processQueue: (queue: string) => Promise<void>,
    log: Logger,
  ): Promise<void> {
    const loops = new Map<string, Promise<void>>();
    const start = (queue: string) => {
      if (loops.has(queue) || signal.aborted) return;
      const loop: Promise<void> = processQueue(queue)
        .catch((error) => log.warn({ err: error, queue }, "dead-letter processing of the queue failed"))
        .finally(() => {
          // Ended (its stream is gone): a later listing starts it again if the queue comes back.
          if (loops.get(queue) === loop) loops.delete(queue);
        });
      loops.set(queue, loop);
    };
    const unsubscribe = this.#broker.queues.onSetUp(start);
    try {
      while (!signal.aborted) {
        await this.#listQueues(signal).then(
          (queues) => {
            for (const queue of queues) start(queue);
          },
          (error) => {
            if (!signal.aborted)
              log.warn(
                { err: error },
                "queues not listed; new queues' dead letters wait for the next listing",
              );
          },
        );
        await sleep(queueDiscoveryMs, signal);
      }
    } finally {
      unsubscribe();
    }
    await Promise.all(loops.values());
  }

  /** Queues that have an advisories stream, whoever set them up. */
  #listQueues(signal: AbortSignal): Promise<string[]> {
    return this.#broker.run(
      "dead-letters.queues",
      async (nc) => {
        const { jsm } = await this.#broker.handles(nc);
        const namePrefix = this.#broker.names.advisoriesStreamPrefix;
        const names = await streamNamesStartingWith(jsm, namePrefix);
        return names.flatMap((name) => queueOfStream(name, namePrefix) ?? []);
      },
      { signal },
    );
  }

  /**
   * Processes the queue's captured advisories until the client closes or
   * `signal` aborts ("ended"), or finds its advisories stream gone ("gone"). An advisory that fails for a reason a retry cannot fix
   * ends there (see `giveUp`, exhausted-task.ts); one that fails transiently is released to be
   * tried again.
   */
  async process(
    nc: NatsConnection,
    queue: string,
    signal: AbortSignal,
    onUnhandled?: (failure: UnhandledExhausted) => void,
  ): Promise<"gone" | "ended"> {
    const n = this.#broker.names;
    let js: JetStreamClient;
    let jsm: JetStreamManager;
    let consumer: Awaited<ReturnType<JetStreamClient["consumers"]["get"]>>;
    try {
      await this.#setup(nc);
      ({ js, jsm } = await this.#broker.queueHandles(nc, queue));
      consumer = await js.consumers.get(n.advisoriesStream(queue), deadLettersConsumer);
    } catch (error) {
      // Deleted since it was set up here (the queue was removed, or lost with the server's
      // store): a later listing, or this runtime setting the queue up again, starts it again.
      if (isNotFound(error)) {
        this.#broker.setups.forget(nc);
        return "gone";
      }
      throw this.#broker.setups.afterFailure(nc, error, "dead-letters.process");
    }
    const messages = await consumer.consume({ max_messages: 64, ...pullLoop });
    const stopped = closeWhenEnded(messages, nc, signal);
    try {
      for await (const m of messages) {
        let advisory: MaxDeliveriesAdvisory;
        try {
          advisory = m.json<MaxDeliveriesAdvisory>();
        } catch {
          // Not an advisory (someone published on the subject): nothing to do, ever.
          m.term();
          continue;
        }
        // Until the task is read, the consumer's name: a job's own consumer is named by its id.
        let exhausted: Exhausted = { ...advisory, queue, jobId: advisory.consumer };
        let index: number | undefined;
        /** The submit its answer names (`answerSubmit`), once its record is read. */
        let submit: string | undefined;
        try {
          const stored = await jsm.streams
            .getMessage(n.tasksStream(queue), { seq: advisory.stream_seq })
            .catch((error) => (isNotFound(error) ? null : Promise.reject(error)));
          // Gone: answered (an answered task leaves the work-queue stream), or already handled.
          if (stored) {
            // The job is the task subject's last token: the advisory names a consumer, which is
            // the job's own or the queue's lane.
            exhausted = { ...exhausted, jobId: jobIdOfSubject(stored.subject) };
            const body = decodeTask(decoder.decode(stored.data));
            // Known before the record is read: a read that fails for good still counts it dead.
            index = body.index;
            // A lane task of a submit rolled back: the committed submit's copy of it is the job's.
            // Its record's read failing rejects: a transient failure is tried again, below.
            const record =
              body.submit === undefined ? undefined : (await this.#broker.getRecord(exhausted.jobId))?.record;
            if (ofOtherSubmit(record, body.submit)) await removeTask(n, jsm, exhausted);
            else {
              submit = answerSubmit(record, body);
              await deadLetter(n, js, jsm, exhausted, body, submit);
            }
          }
          m.ack();
        } catch (error) {
          const failure = classifyNatsError(error, "dead-letters.process");
          if (failure.retry === Retry.transient && !signal.aborted) {
            m.nak(1000);
            continue;
          }
          if (signal.aborted) throw error;
          await giveUp(n, js, jsm, exhausted, index, submit, failure, onUnhandled);
          m.term();
        }
      }
    } catch (error) {
      // Its consumer or stream deleted, or lost with the server's store.
      if (!isConsumerGone(error)) throw error;
      this.#broker.setups.forget(nc);
      return "gone";
    } finally {
      stopped.dispose();
    }
    return "ended";
  }
}
