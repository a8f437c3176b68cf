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
 * How many held tasks a queue's `due` consumer may have delivered and not
 * acked: a task nak'ed with a delay stays pending on nats-server 2.9 until it
 * is delivered again, so this bounds the tasks of a queue held at once.
 * Beyond it the server delivers nothing new until one is acked (a task due
 * sooner than all the pending ones then waits: the limit of this design).
 */
const dueMaxAckPending = 1_000_000;

/**
 * A delivery no mover answers (its mover died, or stopped: a delivery the
 * server sends as a pull loop closes is dropped by the client) comes back
 * after this. A mover keeps the one it handles (`working()`), however long
 * the record read and the publish take. It was 30 s: a runtime stopped
 * gracefully left a held task that long past its time.
 */
export const dueAckWaitMs = 5_000;

/** Each queue's delayed stream on NATS (adapters/delayed-tasks.ts says the design). */
export class NatsDelayedTasks implements DelayedTasks {
  readonly #core: NatsContext;
  readonly #js: NatsJobBroker;
  readonly #log: Logger;
  /** Each queue's stream and consumer, set up once per client and forgotten with the broker's other setups. */
  readonly #setUps: WeakMap<NatsConnection, Map<string, Promise<void>>>;

  constructor(core: NatsContext, js: NatsJobBroker, log: Logger) {
    this.#core = core;
    this.#js = js;
    this.#log = log;
    this.#setUps = js.setups.cache();
  }

  #stream(nc: NatsConnection, queue: string): Promise<void> {
    let queues = this.#setUps.get(nc);
    if (!queues) {
      queues = new Map();
      this.#setUps.set(nc, queues);
    }
    const known = queues.get(queue);
    if (known) return known;
    const setUp = this.#setUp(nc, queue);
    queues.set(queue, setUp);
    // The caller sees the failure; here it only un-caches it (the next use tries again).
    setUp.catch(() => {
      if (queues.get(queue) === setUp) queues.delete(queue);
    });
    return setUp;
  }

  async #setUp(nc: NatsConnection, queue: string): Promise<void> {
    const { jsm } = await this.#js.handles(nc);
    const n = this.#js.names;
    const stream = n.delayedStream(queue);
    await ensureStream(
      jsm,
      {
        name: stream,
        subjects: [n.delayedSubject(queue, "*")],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        duplicate_window: nanos(120_000),
      },
      this.#js.replicas,
    );
    try {
      const { config } = await jsm.consumers.info(stream, dueConsumer);
      // Made by an older version, with a longer ack wait: shortened. Not now (an election, no
      // permission): the queue is still served, its ack wait as it was, tried again by the next
      // runtime (or client) that sets the queue up.
      if (config.ack_wait !== nanos(dueAckWaitMs))
        await jsm.consumers
          .update(stream, dueConsumer, { ack_wait: nanos(dueAckWaitMs) })
          .catch((error: unknown) =>
            this.#log.warn(
              { stream, err: error },
              "due consumer's ack wait not shortened: a delivery a stopping mover drops comes back after its old one",
            ),
          );
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await jsm.consumers.add(stream, {
        durable_name: dueConsumer,
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(dueAckWaitMs),
        max_deliver: -1,
        max_ack_pending: dueMaxAckPending,
        deliver_policy: DeliverPolicy.All,
      });
    }
  }

  /** The queue's stream and `due` consumer made now (`rt.admin.provision([queue])`). */
  provision(queue: string): Promise<void> {
    return this.#js.run("delayed.provision", (nc) => this.#stream(nc, queue));
  }

  holdTasks(record: JobRecord, held: readonly HeldTaskBody[], signal: AbortSignal): Promise<void> {
    const subject = this.#js.names.delayedSubject(record.queue, record.id);
    return this.#js.run(
      "job.tasks.hold",
      async (nc) => {
        await this.#stream(nc, record.queue);
        await publishPipelined(this.#js.acks(nc), {
          subject,
          bodies: held.map((task) => encodeHeld(record.queue, task)),
          // The held message's own id: the task's (`msgId`) is for its publish once due.
          msgId: (n) => `held.${held[n]?.msgId}`,
          window: 256,
          signal,
        });
      },
      { timeoutMs: Math.max(30_000, held.length * 2), signal },
    );
  }

  consumeHeld(
    queue: string,
    onHeld: (task: HeldTask) => Promise<HeldAnswer>,
    signal: AbortSignal,
  ): Promise<void> {
    return superviseLoop(this.#core.connection, (nc, s) => this.#consume(nc, queue, onHeld, s), signal, {
      name: `mover:${queue}`,
      log: this.#log,
    });
  }

  async #consume(
    nc: NatsConnection,
    queue: string,
    onHeld: (task: HeldTask) => Promise<HeldAnswer>,
    signal: AbortSignal,
  ): Promise<"ended"> {
    // A mover follows a queue only while a job of it holds tasks (api/movers.ts): the stream is
    // there already (its submit held them), or made now if it is gone (a server that lost its store).
    await this.#stream(nc, queue);
    let consumer: Awaited<ReturnType<ReturnType<typeof jetstream>["consumers"]["get"]>>;
    try {
      consumer = await jetstream(nc).consumers.get(this.#js.names.delayedStream(queue), dueConsumer);
    } catch (error) {
      if (!isConsumerGone(error)) throw error;
      // Deleted after this connection set it up (by hand, or with the server's store): set up
      // again on the next round. Left to the setups known here, every round failed the same way.
      this.#js.setups.forget(nc);
      return "ended";
    }
    // As many as it handles at once: one buffered behind a full loop would wait out the ack wait
    // there when handlings are slow (an election), and the server would give it to another
    // mover too (pulled 256 at a time: 128 of 256 handled twice, each for 2 s).
    const messages = await consumer.consume({
      max_messages: moversInFlight,
      threshold_messages: moversInFlight / 2,
      ...pullLoop,
    });
    const stopped = closeWhenEnded(messages, nc, signal);
    // Many tasks fall due at once (a job held by one `delayMs`): each waits for a record read
    // and a publish, so they are moved side by side, not one after the other.
    const inFlight = new Set<Promise<void>>();
    try {
      for await (const m of messages) {
        const handled = this.#handle(m, queue, onHeld).finally(() => inFlight.delete(handled));
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

  async #handle(m: JsMsg, queue: string, onHeld: (task: HeldTask) => Promise<HeldAnswer>): Promise<void> {
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
    // Its queue is its stream's: a message naming another (anyone allowed to hold tasks of this
    // queue can write one) was moved to that queue's job, a task no submit of it made.
    if (task.queue !== queue) {
      this.#log.error(
        { subject: m.subject, queue, named: task.queue },
        "held task naming another queue dropped",
      );
      m.term();
      return;
    }
    // Kept while its record is read and its task published: not given to another mover meanwhile.
    const keeper = setInterval(() => m.working(), dueAckWaitMs / 3);
    try {
      const answer = await onHeld(task);
      if (answer.kind === "done") m.ack();
      else m.nak(answer.ms);
    } catch (error) {
      this.#log.warn({ jobId, err: error }, "held task not moved; trying again");
      m.nak(1000);
    } finally {
      clearInterval(keeper);
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
        const info = await jsm.streams.info(this.#js.names.delayedStream(queue), {
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
   * that moves the queue's `due` consumer (no filter: it covers every job of
   * the queue) past the stream's last message and forgets its pending acks, so
   * every other job's held tasks of the queue would be skipped for good
   * (subject-messages.ts).
   */
  async unhold(job: JobTasksRef): Promise<void> {
    // One delete a task (a filtered purge would move the queue's `due` past every held task):
    // its deadline grows with them, as the hold's does. Under the operation's own, a cancel of a
    // job holding some 50,000 tasks timed out, its consumer and visible tasks left to cleanup.
    const held = await this.heldCount(job.queue, job.id);
    return this.#js.run(
      "job.tasks.unhold",
      async (nc) => {
        const { jsm } = await this.#js.handles(nc);
        await deleteSubjectMessages(
          jsm,
          this.#js.names.delayedStream(job.queue),
          this.#js.names.delayedSubject(job.queue, job.id),
          { max: Number.MAX_SAFE_INTEGER },
        ).catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
      },
      { timeoutMs: Math.max(30_000, held * 2) },
    );
  }
}
