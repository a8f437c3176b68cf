import {
  AckPolicy,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { boundError, encodeDeadLetter } from "../../effects/dead-letter.ts";
import { Retry } from "../../errors.ts";
import type { RuntimeCore } from "../../runtime.ts";
import type { DeadLetter, UnhandledExhausted } from "../broker.ts";
import { classifyNatsError } from "./classify-error.ts";

export type { DeadLetter } from "../broker.ts";

import { ensureStream, isNotFound, type NatsJobBroker } from "./job-broker.ts";

const nanos = (ms: number) => Math.round(ms * 1_000_000);
const decoder = new TextDecoder();

interface MaxDeliveriesAdvisory {
  readonly stream: string;
  readonly consumer: string;
  readonly stream_seq: number;
  readonly deliveries: number;
}

/**
 * Dead letters on NATS. JetStream's MAX_DELIVERIES advisory is sent once, and
 * only when the server next tries to deliver: so advisories are captured in a
 * work-queue stream (nothing is missed while no runtime listens) and each is
 * processed exactly once by whichever runtime pulls it: the task's message is
 * copied to the dead-letter subject with its payload, a `dead` result is
 * stored for the job, and the message leaves the tasks stream.
 */
export class NatsDeadLetters {
  readonly #core: RuntimeCore;
  readonly #broker: NatsJobBroker;
  readonly #maxAgeMs: number;
  readonly #ready = new WeakMap<NatsConnection, Promise<JetStreamManager>>();

  constructor(core: RuntimeCore, broker: NatsJobBroker, maxAgeMs: number) {
    this.#core = core;
    this.#broker = broker;
    this.#maxAgeMs = maxAgeMs;
  }

  #setup(nc: NatsConnection): Promise<JetStreamManager> {
    let ready = this.#ready.get(nc);
    if (!ready) {
      ready = (async () => {
        const { jsm } = await this.#broker.handles(nc);
        const n = this.#broker.names;
        await ensureStream(jsm, {
          name: n.deadStream,
          subjects: [n.deadSubject("*")],
          retention: RetentionPolicy.Limits,
          storage: StorageType.File,
          max_age: nanos(this.#maxAgeMs),
        });
        await ensureStream(jsm, {
          name: n.advisoriesStream,
          subjects: [n.maxDeliveriesSubject],
          retention: RetentionPolicy.Workqueue,
          storage: StorageType.File,
          max_age: nanos(this.#maxAgeMs),
        });
        await jsm.consumers.add(n.advisoriesStream, {
          durable_name: "dead-letters",
          ack_policy: AckPolicy.Explicit,
          ack_wait: nanos(30_000),
        });
        return jsm;
      })();
      ready.catch(() => this.#ready.delete(nc));
      this.#ready.set(nc, ready);
    }
    return ready;
  }

  /** Makes sure advisories are captured from now on (before any job could exhaust a task). */
  ensure(): Promise<void> {
    return this.#core.run("dead-letters.setup", async (nc) => void (await this.#setup(nc)));
  }

  /** Stores a dead letter; its id makes a retried store land once. */
  store(letter: Omit<DeadLetter, "seq" | "taskId">, msgId: string): Promise<void> {
    return this.#core.run("dead-letters.store", async (nc) => {
      await this.#setup(nc);
      await jetstream(nc).publish(this.#broker.names.deadSubject(letter.jobId), encodeDeadLetter(letter), {
        msgID: msgId,
      });
    });
  }

  list(jobId: string): Promise<DeadLetter[]> {
    return this.#core.run("dead-letters.list", async (nc) => {
      const jsm = await this.#setup(nc);
      const subject = this.#broker.names.deadSubject(jobId);
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
          letters.push({ ...(m.json() as Omit<DeadLetter, "seq">), seq: m.seq });
          if (m.info.pending === 0) break;
        }
      } finally {
        await jsm.consumers.delete(this.#broker.names.deadStream, consumer.name).catch(() => undefined);
      }
      // A task can die twice (worker and advisory): keep the first.
      const byIndex = new Map<number, DeadLetter>();
      for (const l of letters) if (!byIndex.has(l.index)) byIndex.set(l.index, l);
      return [...byIndex.values()].sort((a, b) => a.index - b.index);
    });
  }

  remove(seqs: readonly number[]): Promise<void> {
    return this.#core.run("dead-letters.remove", async (nc) => {
      const jsm = await this.#setup(nc);
      for (const seq of seqs) {
        await jsm.streams.deleteMessage(this.#broker.names.deadStream, seq).catch((error) => {
          if (!isNotFound(error)) throw error;
        });
      }
    });
  }

  /**
   * Processes captured advisories until the client closes or `signal` aborts.
   * An advisory that fails for a reason a
   * retry cannot fix ends there (see `#giveUp`); one that fails transiently is
   * released to be tried again.
   */
  async process(
    nc: NatsConnection,
    signal: AbortSignal,
    onUnhandled?: (failure: UnhandledExhausted) => void,
  ): Promise<void> {
    await this.#setup(nc);
    const n = this.#broker.names;
    const { js, jsm } = await this.#broker.handles(nc);
    const consumer = await js.consumers.get(n.advisoriesStream, "dead-letters");
    const messages = await consumer.consume({ max_messages: 64 });
    const stop = () => void messages.close();
    signal.addEventListener("abort", stop, { once: true });
    void nc.closed().then(stop);
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
        let index: number | undefined;
        try {
          const stored = await jsm.streams
            .getMessage(n.tasksStream, { seq: advisory.stream_seq })
            .catch((error) => (isNotFound(error) ? null : Promise.reject(error)));
          // Gone: answered (an answered task leaves the work-queue stream), or already handled.
          if (stored) {
            const body = JSON.parse(decoder.decode(stored.data)) as { i: number; p: unknown };
            index = body.i;
            await this.#deadLetter(js, jsm, advisory, body);
          }
          m.ack();
        } catch (error) {
          const failure = classifyNatsError(error, "dead-letters.process");
          if (failure.retry === Retry.transient && !signal.aborted) {
            m.nak(1000);
            continue;
          }
          if (signal.aborted) throw error;
          await this.#giveUp(js, jsm, advisory, index, failure, onUnhandled);
          m.term();
        }
      }
    } finally {
      signal.removeEventListener("abort", stop);
    }
  }

  /** Copies the exhausted task to the dead letters, stores its `dead` result, removes it. */
  async #deadLetter(
    js: JetStreamClient,
    jsm: JetStreamManager,
    advisory: MaxDeliveriesAdvisory,
    body: { i: number; p: unknown },
  ) {
    const n = this.#broker.names;
    const jobId = advisory.consumer;
    const letter = {
      jobId,
      index: body.i,
      payload: body.p,
      error: `no answer after ${advisory.deliveries} deliveries (worker died or its lease ran out)`,
      deliveries: advisory.deliveries,
      at: Date.now(),
      source: "advisory" as const,
    };
    await js.publish(n.deadSubject(jobId), encodeDeadLetter(letter), {
      msgID: `dead.${jobId}.${advisory.stream_seq}`,
    });
    await this.#deadResult(js, jobId, body.i, letter.error, advisory.stream_seq);
    await jsm.streams.deleteMessage(n.tasksStream, advisory.stream_seq).catch(() => undefined);
  }

  #deadResult(js: JetStreamClient, jobId: string, index: number, error: string, seq: number) {
    return js.publish(
      this.#broker.names.resultsSubject(jobId),
      JSON.stringify([{ i: index, ok: false, dead: true, e: boundError(error) }]),
      { msgID: `deadresult.${jobId}.${seq}` },
    );
  }

  /**
   * An exhausted task that cannot be dead-lettered (a permanent error): a
   * retry would fail the same way every ack wait, forever, and its job would
   * never end. So it ends here, visibly: its `dead` result is stored (a small
   * message, so it fits where the letter did not) and the job counts it, the
   * task leaves the stream, and `onUnhandled` logs it.
   */
  async #giveUp(
    js: JetStreamClient,
    jsm: JetStreamManager,
    advisory: MaxDeliveriesAdvisory,
    index: number | undefined,
    error: unknown,
    onUnhandled?: (failure: UnhandledExhausted) => void,
  ): Promise<void> {
    const jobId = advisory.consumer;
    let countedDead = false;
    if (index !== undefined) {
      const reason = `no answer after ${advisory.deliveries} deliveries; dead letter not stored: ${String(error instanceof Error ? error.message : error)}`;
      countedDead = await this.#deadResult(js, jobId, index, reason, advisory.stream_seq).then(
        () => true,
        () => false,
      );
    }
    await jsm.streams
      .deleteMessage(this.#broker.names.tasksStream, advisory.stream_seq)
      .catch(() => undefined);
    onUnhandled?.({ jobId, index, error, countedDead });
  }
}
