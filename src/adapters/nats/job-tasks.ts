import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  type JobRecord,
  type JobSettings,
  type JobTasksRef,
  laneMaxTasksLimit,
  type SubmitTasksRef,
} from "../../kernel/job-record.ts";
import { holdsAnswer } from "../../kernel/result-wire.ts";
import { taskIndexOf, taskOfSubmit } from "../../kernel/wire.ts";
import type { TaskMessageRef } from "../dead-letters.ts";
import { type BrokerNames, taskSubjectOf } from "../names.ts";
import type { ConsumerRestore } from "../task-queue.ts";
import { found, jobConsumerConfig, restoreJobConsumer } from "./job-consumers.ts";
import type { NatsContext, RunOptions } from "./nats-context.ts";
import type { PubAcks } from "./pub-acks.ts";
import { publishPipelined } from "./publish-pipelined.ts";
import type { QueueStreams } from "./queue-streams.ts";
import { isNoMessage, isNotFound, streamInfoIfAny } from "./streams.ts";
import { deleteSubjectMessages, nextOnSubject } from "./subject-messages.ts";

const encoder = new TextEncoder();

/** How many of a redrive's old task messages are looked up (and deleted) at once. */
const removeWindow = 64;

/** What the tasks use of their broker (`NatsJobBroker`): its names, queues, operations and handles. */
interface TasksBroker extends Pick<NatsContext, "run"> {
  readonly names: BrokerNames;
  readonly queues: Pick<QueueStreams, "ensureLane">;
  handles(nc: NatsConnection): Promise<TasksHandles>;
  queueHandles(nc: NatsConnection, queue: string): Promise<TasksHandles>;
  acks(nc: NatsConnection): PubAcks;
}

interface TasksHandles {
  readonly jsm: JetStreamManager;
}

/**
 * A job's tasks and its consumer on the queue's tasks stream; each method
 * one operation run through the broker (`NatsJobBroker.run`), which
 * delegates to it.
 */
export class NatsJobTasks {
  readonly #broker: TasksBroker;
  readonly #names: BrokerNames;
  /** Each job's own consumer kept in the server's memory (`jobs.memoryConsumers`). */
  readonly #memoryConsumers: boolean;

  constructor(broker: TasksBroker, memoryConsumers: boolean) {
    this.#broker = broker;
    this.#names = broker.names;
    this.#memoryConsumers = memoryConsumers;
  }

  #run<A>(name: string, op: (h: TasksHandles, nc: NatsConnection) => Promise<A>) {
    return this.#broker.run(name, async (nc) => op(await this.#broker.handles(nc), nc));
  }

  /** As `#run`, for operations on a queue's own streams: they are set up first. */
  #runOnQueue<A>(
    name: string,
    queue: string,
    op: (h: TasksHandles, nc: NatsConnection) => Promise<A>,
    options?: RunOptions,
  ) {
    return this.#broker.run(name, async (nc) => op(await this.#broker.queueHandles(nc, queue), nc), options);
  }

  /**
   * Publishes the job's tasks, pipelined, each with message id
   * `<jobId>.<submitId>.<n>` (`n`: its position, or `ids[n]`): a retried batch (after a timeout whose outcome
   * is unknown) cannot duplicate a task. Invisible to workers until the
   * consumer exists; a lane job's tasks reach workers at once (its lane
   * consumer is set up first): one task's publish is its job's commit point,
   * and workers hold the tasks of a job of more until its record commits it.
   */
  publishTasks(
    record: JobRecord,
    bodies: readonly string[],
    signal: AbortSignal,
    ids?: readonly string[],
  ): Promise<void> {
    const subject = taskSubjectOf(this.#names, record);
    const idPrefix = `${record.id}.${record.submitId}`;
    return this.#runOnQueue(
      "job.tasks.publish",
      record.queue,
      // Not js.publish() per task: its per-request machinery was most of a submit's CPU.
      async ({ jsm }, nc) => {
        if (record.lane) await this.#broker.queues.ensureLane(nc, jsm, record.queue);
        await publishPipelined(this.#broker.acks(nc), {
          subject,
          bodies,
          msgId: (n) => `${idPrefix}.${ids?.[n] ?? n}`,
          window: 256,
          signal,
        });
      },
      { timeoutMs: Math.max(30_000, bodies.length * 2), signal },
    );
  }

  /** The commit point of a submit: before it no worker can see a task of the job. */
  createConsumer(queue: string, jobId: string, settings: JobSettings): Promise<void> {
    return this.#runOnQueue("job.consumer.create", queue, async ({ jsm }) => {
      await jsm.consumers.add(this.#names.tasksStream(queue), this.#consumerConfig(queue, jobId, settings));
    });
  }

  /** `held`: whether tasks of the job wait until due (delayed): then it is made again with none stored. */
  restoreConsumer(
    job: JobTasksRef,
    settings: JobSettings,
    held: () => Promise<boolean>,
  ): Promise<ConsumerRestore> {
    return this.#runOnQueue("job.consumer.restore", job.queue, ({ jsm }) =>
      restoreJobConsumer(jsm, this.#names, job, this.#consumerConfig(job.queue, job.id, settings), held),
    );
  }

  #consumerConfig(queue: string, jobId: string, settings: JobSettings) {
    return jobConsumerConfig(this.#names, queue, jobId, settings, this.#memoryConsumers);
  }

  /**
   * Tasks waiting and tasks held by workers (leased, not answered), for the
   * stall log. A queue whose stream is missing has no consumer: nothing is set up.
   */
  consumerCounts(
    job: JobTasksRef,
  ): Promise<{ waiting: number; held: number; redelivered: number } | undefined> {
    // The lane's counts are every lane job's of the queue: none of them is this job's.
    if (job.lane) return Promise.resolve(undefined);
    return this.#run("job.consumer.counts", async ({ jsm }) => {
      try {
        const info = await jsm.consumers.info(this.#names.tasksStream(job.queue), job.id);
        return { waiting: info.num_pending, held: info.num_ack_pending, redelivered: info.num_redelivered };
      } catch (error) {
        if (isNotFound(error)) return undefined;
        throw error;
      }
    });
  }

  /**
   * The commit point's witness (the reaper, the lost-task check): the job's
   * consumer; for a lane job, its task or a result of it stored (a worker
   * stores the result before it acks). A queue whose stream is missing has neither.
   */
  tasksCommitted(job: SubmitTasksRef): Promise<boolean> {
    const n = this.#names;
    const { submitId } = job;
    return this.#run("job.tasks.committed", async ({ jsm }) => {
      const stream = n.tasksStream(job.queue);
      if (!job.lane) return found(jsm.consumers.info(stream, job.id));
      // Read from the first: a task of a rolled-back submit may be stored before or after it.
      const lane = n.laneSubject(job.queue, job.id);
      for (let from = 1; ; ) {
        const task = await nextOnSubject(jsm, stream, lane, from);
        if (!task) break;
        if (taskOfSubmit(task.string(), submitId)) return true;
        from = task.seq + 1;
      }
      // Its last result, unless a redrive marker took it back (a redrive that died before its
      // task); a message of another submit's answers alone is passed over.
      const results = n.resultsSubject(job.queue, job.id);
      const last = await jsm.streams
        .getMessage(n.resultsStream, { last_by_subj: results })
        .catch((error: unknown) => (isNotFound(error) ? null : Promise.reject(error)));
      if (last === null) return false;
      const said = holdsAnswer(last.string(), submitId);
      if (said !== undefined) return said;
      let earlier: boolean | undefined;
      for (let from = 1; from < last.seq; ) {
        const stored = await nextOnSubject(jsm, n.resultsStream, results, from);
        if (!stored || stored.seq >= last.seq) break;
        earlier = holdsAnswer(stored.string(), submitId) ?? earlier;
        from = stored.seq + 1;
      }
      return earlier === true;
    });
  }

  /**
   * Deletes the job's consumer (workers' loops for it end) and purges its
   * remaining tasks; a lane job's task is deleted from its queue's lane. A
   * queue whose stream is missing (a submit that failed before setting it
   * up) holds nothing to remove.
   */
  tasksMark(job: JobTasksRef): Promise<number> {
    return this.#run("job.tasks.mark", async ({ jsm }) => {
      const info = await streamInfoIfAny(jsm, this.#names.tasksStream(job.queue));
      return info ? info.state.last_seq + 1 : 0;
    });
  }

  removeTasks(job: JobTasksRef, below?: number): Promise<void> {
    return this.#run("job.tasks.remove", async ({ jsm }) => {
      const stream = this.#names.tasksStream(job.queue);
      const unlessNotFound = (error: unknown) => {
        if (!isNotFound(error)) throw error;
      };
      if (job.lane) return deleteLaneTasks(jsm, stream, this.#names.laneSubject(job.queue, job.id), below);
      // Below the mark only: a task stored since (a redrive's) stays. The purge first: on
      // nats-server 2.9 it moves a consumer of the subject to the first task left and forgets
      // the deliveries in flight (`consumer.purge`), so a redrive's task already handed to a
      // worker would never come again while that consumer lived. The consumer is deleted after
      // it, and made again over the tasks still stored (the lost-task check, a takeover).
      if (below === undefined || below > 1)
        await jsm.streams
          .purge(stream, {
            filter: this.#names.tasksSubject(job.queue, job.id),
            ...(below === undefined ? {} : { seq: below }),
          })
          .catch(unlessNotFound);
      await jsm.consumers.delete(stream, job.id).catch(unlessNotFound);
    });
  }

  removeTaskMessages(job: JobTasksRef, tasks: readonly TaskMessageRef[]): Promise<void> {
    const gone = (error: unknown) => {
      if (!isNoMessage(error) && !isNotFound(error)) throw error;
      return undefined;
    };
    return this.#broker.run(
      "job.tasks.remove-messages",
      async (nc) => {
        const { jsm } = await this.#broker.handles(nc);
        const stream = this.#names.tasksStream(job.queue);
        const subject = taskSubjectOf(this.#names, job);
        const state = (await streamInfoIfAny(jsm, stream))?.state;
        // Past the end (a store made again since; a clustered 2.9 resets the stream's group on such
        // a delete) or below the first (gone: most are, their term went through): not asked.
        const asked = tasks.filter(
          ({ seq }) => state !== undefined && seq >= state.first_seq && seq <= state.last_seq,
        );
        // In windows, not one round trip after the other: a redrive of thousands of tasks.
        for (let k = 0; k < asked.length; k += removeWindow)
          await Promise.all(
            asked.slice(k, k + removeWindow).map(async ({ seq, index }) => {
              const stored = await jsm.streams.getMessage(stream, { seq }).catch(gone);
              // Another job's task now, or another task of the job made again (sequences start
              // over in a store made again), or gone.
              if (stored?.subject === subject && taskIndexOf(stored.string()) === index)
                await jsm.streams.deleteMessage(stream, seq, false).catch(gone);
            }),
          );
      },
      { timeoutMs: Math.max(30_000, tasks.length * 2) },
    );
  }

  announceCreated(queue: string, jobId: string): Promise<void> {
    return this.#run("job.announce", async (_h, nc) => {
      nc.publish(this.#names.jobCreatedSubject(queue), encoder.encode(jobId));
    });
  }
}

/**
 * Deletes a lane job's task messages one by one, never with a filtered
 * purge (see `deleteSubjectMessages`): a purge made the lane skip every
 * other lane job's task stored then (they stayed in the stream, never
 * delivered: 252 of 300 jobs hung in `test/integration/lane.test.ts`).
 * A lane subject holds a job's tasks (at most `laneMaxTasksLimit`); a few
 * more (copies put back, a redrive raced) are bounded.
 * Only below `below` when given: a task published since the caller looked stays.
 */
export const deleteLaneTasks = (
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  below?: number,
): Promise<void> =>
  deleteSubjectMessages(jsm, stream, subject, {
    max: laneMaxTasksLimit + 16,
    ...(below === undefined ? {} : { below }),
  });
