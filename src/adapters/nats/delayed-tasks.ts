import {
  AckPolicy,
  DeliverPolicy,
  type JsMsg,
  jetstream,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { superviseLoop } from "../../effects/supervise-loop.ts";
import type { JobRecord, JobTasksRef } from "../../kernel/job-record.ts";
import type { Logger } from "../../kernel/logger.ts";
import { decodeHeld, encodeHeld, type HeldTaskBody } from "../../kernel/wire.ts";
import { type DelayedTasks, type HeldAnswer, type HeldTask, moversInFlight } from "../delayed-tasks.ts";
import { dueConsumer } from "../names.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import type { NatsContext } from "./nats-context.ts";
import { publishPipelined } from "./publish-pipelined.ts";
import { closeWhenEnded, isConsumerGone, pullLoop } from "./pull-loops.ts";
import { ensureStream, isNotFound, nanos } from "./streams.ts";
import { deleteSubjectMessages } from "./subject-messages.ts";

const decoder = new TextDecoder();

/**
 * How many held tasks the `due` consumer may have delivered and not acked:
 * a task nak'ed with a delay stays pending on nats-server 2.9 until it is
 * delivered again, so this bounds the tasks held at once. Beyond it the
 * server delivers nothing new until one is acked (a task due sooner than
 * all the pending ones then waits: the limit of this design).
 */
const dueMaxAckPending = 1_000_000;

/**
 * How often a mover looks for the delayed stream while there is none (a
 * consumer info each time): a task held by another runtime is moved by that
 * runtime's mover meanwhile.
 */
const lookAgainMs = 10_000;

/** A mover that died with a delivery: the server gives it to another after this. */
const dueAckWaitMs = 30_000;

/** The delayed stream on NATS (adapters/delayed-tasks.ts says the design). */
export class NatsDelayedTasks implements DelayedTasks {
  readonly #core: NatsContext;
  readonly #js: NatsJobBroker;
  readonly #log: Logger;
  /** The stream and its consumer, set up once per client and forgotten with the broker's other setups. */
  readonly #setUpOnce: (nc: NatsConnection, make: () => Promise<void>) => Promise<void>;
  /** Movers waiting for the delayed stream to exist. */
  readonly #waiters = new Set<() => void>();

  constructor(core: NatsContext, js: NatsJobBroker, log: Logger) {
    this.#core = core;
    this.#js = js;
    this.#log = log;
    this.#setUpOnce = js.setups.once<void>();
  }

  #stream(nc: NatsConnection): Promise<void> {
    return this.#setUpOnce(nc, () => this.#setUp(nc));
  }

  async #setUp(nc: NatsConnection): Promise<void> {
    const { jsm } = await this.#js.handles(nc);
    const n = this.#js.names;
    await ensureStream(
      jsm,
      {
        name: n.delayedStream,
        subjects: [`${this.#core.options.prefix}.delayed.>`],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        duplicate_window: nanos(120_000),
      },
      this.#js.replicas,
    );
    try {
      await jsm.consumers.info(n.delayedStream, dueConsumer);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await jsm.consumers.add(n.delayedStream, {
        durable_name: dueConsumer,
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(dueAckWaitMs),
        max_deliver: -1,
        max_ack_pending: dueMaxAckPending,
        deliver_policy: DeliverPolicy.All,
      });
    }
  }

  holdTasks(record: JobRecord, held: readonly HeldTaskBody[], signal: AbortSignal): Promise<void> {
    const subject = this.#js.names.delayedSubject(record.queue, record.id);
    return this.#js.run(
      "job.tasks.hold",
      async (nc) => {
        await this.#stream(nc);
        await publishPipelined(nc, {
          subject,
          bodies: held.map((task) => encodeHeld(record.queue, task)),
          // The held message's own id: the task's (`msgId`) is for its publish once due.
          msgId: (n) => `held.${held[n]?.msgId}`,
          window: 256,
          ackTimeoutMs: 5000,
          signal,
        });
        this.#wake();
      },
      { timeoutMs: Math.max(30_000, held.length * 2), signal },
    );
  }

  /** Resolves after `ms`, when `signal` aborts, or once this runtime holds a task. */
  #heldHereOr(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
      this.#waiters.add(done);
    });
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }

  consumeHeld(onHeld: (task: HeldTask) => Promise<HeldAnswer>, signal: AbortSignal): Promise<void> {
    return superviseLoop(this.#core.connection, (nc, s) => this.#consume(nc, onHeld, s), signal, {
      name: "mover",
      log: this.#log,
    });
  }

  async #consume(
    nc: NatsConnection,
    onHeld: (task: HeldTask) => Promise<HeldAnswer>,
    signal: AbortSignal,
  ): Promise<"ended"> {
    // Made by the first hold, never by a mover: a deployment without delayed tasks has no
    // delayed stream. Until it exists, look again every `lookAgainMs`, or at once after a hold here.
    const { jsm } = await this.#js.handles(nc);
    const exists = await jsm.consumers.info(this.#js.names.delayedStream, dueConsumer).then(
      () => true,
      (error: unknown) => (isNotFound(error) ? false : Promise.reject(error)),
    );
    if (!exists) {
      await this.#heldHereOr(lookAgainMs, signal);
      return "ended";
    }
    const consumer = await jetstream(nc).consumers.get(this.#js.names.delayedStream, dueConsumer);
    const messages = await consumer.consume({ max_messages: 256, threshold_messages: 128, ...pullLoop });
    const stopped = closeWhenEnded(messages, nc, signal);
    // Many tasks fall due at once (a job held by one `delayMs`): each waits for a record read
    // and a publish, so they are moved side by side, not one after the other.
    const inFlight = new Set<Promise<void>>();
    try {
      for await (const m of messages) {
        const handled = this.#handle(m, onHeld).finally(() => inFlight.delete(handled));
        inFlight.add(handled);
        if (inFlight.size >= moversInFlight) await Promise.race(inFlight);
      }
    } catch (error) {
      if (!isConsumerGone(error)) throw error;
      // Deleted, or lost with the server's store: made again on the next round.
      this.#js.setups.forget(nc);
    } finally {
      await Promise.all(inFlight);
      stopped.dispose();
    }
    return "ended";
  }

  async #handle(m: JsMsg, onHeld: (task: HeldTask) => Promise<HeldAnswer>): Promise<void> {
    const jobId = m.subject.slice(m.subject.lastIndexOf(".") + 1);
    let task: HeldTask;
    try {
      task = { ...decodeHeld(decoder.decode(m.data)), jobId };
    } catch (error) {
      // Nothing jetstate wrote: never handed over, never delivered again.
      this.#log.error({ subject: m.subject, err: error }, "unreadable held task dropped");
      m.term();
      return;
    }
    try {
      const answer = await onHeld(task);
      if (answer.kind === "done") m.ack();
      else m.nak(answer.ms);
    } catch (error) {
      this.#log.warn({ jobId, err: error }, "held task not moved; trying again");
      m.nak(1000);
    }
  }

  releaseHeld(task: HeldTask): Promise<void> {
    const subject = this.#js.names.tasksSubject(task.queue, task.jobId);
    return this.#js.run("job.tasks.release", async (nc) => {
      const { js } = await this.#js.queueHandles(nc, task.queue);
      await js.publish(subject, task.body, { msgID: task.msgId });
    });
  }

  heldCount(queue: string, jobId: string): Promise<number> {
    return this.#js.run("job.tasks.held", async (nc) => {
      const { jsm } = await this.#js.handles(nc);
      try {
        const info = await jsm.streams.info(this.#js.names.delayedStream, {
          subjects_filter: this.#js.names.delayedSubject(queue, jobId),
        });
        return Object.values(info.state.subjects ?? {}).reduce((sum, count) => sum + count, 0);
      } catch (error) {
        if (isNotFound(error)) return 0;
        throw error;
      }
    });
  }

  /**
   * Removes the job's held tasks (a cancel, a rollback, its end): none of
   * them fires later. One by one, never a filtered purge: on nats-server 2.9
   * that moves the `due` consumer (no filter: it covers every subject) past
   * the stream's last message and forgets its pending acks, so every other
   * job's held tasks would be skipped for good (subject-messages.ts).
   */
  unhold(job: JobTasksRef): Promise<void> {
    return this.#js.run("job.tasks.unhold", async (nc) => {
      const { jsm } = await this.#js.handles(nc);
      await deleteSubjectMessages(
        jsm,
        this.#js.names.delayedStream,
        this.#js.names.delayedSubject(job.queue, job.id),
        { max: Number.MAX_SAFE_INTEGER },
      ).catch((error: unknown) => {
        if (!isNotFound(error)) throw error;
      });
    });
  }
}
