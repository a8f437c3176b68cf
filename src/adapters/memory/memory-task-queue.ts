import { RuntimeStopped } from "../../kernel/errors.ts";
import type { JobTasksRef } from "../../kernel/job-record.ts";
import { holdsAnswer } from "../../kernel/result-wire.ts";
import { LinkedControllers } from "../../kernel/signals.ts";
import { taskIndexOf, taskOfSubmit } from "../../kernel/wire.ts";
import type { DeadLetters } from "../dead-letters.ts";
import { taskSubjectOf } from "../names.ts";
import type { LaneLease, TaskDelivery, TaskSetup } from "../task-queue.ts";
import type { MemoryConsumer } from "./memory-consumer.ts";
import type { MemoryDelayedTasks } from "./memory-delayed.ts";
import { checkToken, type MemoryServerState, memoryLaneName } from "./memory-server.ts";

/**
 * A signal aborted with `signal` or when the broker closes, for one job's loop: linked to the
 * broker's stop through one listener for all of them, not an `AbortSignal.any` each (on Node 20
 * each leaves a weak reference in the broker's stop signal for good: one for every job).
 * `done()` once the loop has ended.
 */
type MemoryLoopStop = (signal: AbortSignal) => { stop: AbortSignal; done: () => void };

/** What the memory broker hands the parts of it that run a job's loops. */
export interface MemoryBrokerCore {
  readonly server: MemoryServerState;
  /** Throws once the broker or its server is closed. */
  readonly open: (operation: string) => void;
  /** Aborted when the broker or its server closes: every long-running method ends then. */
  readonly stop: AbortSignal;
  /** What a job's reader or task loop stops with besides its caller's signal. */
  readonly until: MemoryLoopStop;
}

/** The core of a broker whose loops end with `stop`, each linked to it by one `LinkedControllers`. */
export const memoryBrokerCore = (
  server: MemoryServerState,
  open: (operation: string) => void,
  stop: AbortSignal,
): MemoryBrokerCore => {
  const stops = new LinkedControllers(stop);
  const until: MemoryLoopStop = (signal) => {
    const controller = stops.link(signal);
    return { stop: controller.signal, done: () => stops.unlink(controller) };
  };
  return { server, open, stop, until };
};

/** The task half of the broker port: a job's tasks and their deliveries. */
export type MemoryTaskQueue = TaskSetup & TaskDelivery & Pick<DeadLetters, "removeTaskMessages">;

/**
 * A job's tasks on the memory broker (adapters/task-queue.ts is the port):
 * on the server's one task stream, on the job's own subject with a consumer
 * of its own or on its queue's lane; and the loops that deliver them.
 */
export const memoryTaskQueue = (
  { server, open, until }: MemoryBrokerCore,
  delayed: MemoryDelayedTasks,
): MemoryTaskQueue => {
  /** Where the job's tasks are: its own subject, or its queue's lane. */
  const tasksSubject = (op: string, job: JobTasksRef): string =>
    taskSubjectOf(server.names, {
      ...job,
      queue: checkToken(op, "queue", job.queue),
      id: checkToken(op, "jobId", job.id),
    });

  /**
   * The job's consumer on its queue's tasks: one stream holds every queue's
   * tasks here, so a consumer of another queue's job (never made on NATS,
   * where each queue has its own stream) is not found either.
   */
  const consumerOf = (op: string, queue: string, jobId: string): MemoryConsumer | undefined => {
    open(op);
    const consumer = server.tasks.consumer(checkToken(op, "jobId", jobId, true));
    const subject = server.names.tasksSubject(checkToken(op, "queue", queue), jobId);
    return consumer?.subject === subject ? consumer : undefined;
  };

  const deliver = async (
    consumer: MemoryConsumer,
    onTask: (lease: LaneLease) => void | Promise<void>,
    signal: AbortSignal,
  ): Promise<"gone" | "stopped"> => {
    const { stop, done } = until(signal);
    try {
      for (;;) {
        const next = await consumer.take(stop);
        if (next === "gone" || next === "stopped") return next;
        try {
          await onTask(next);
        } catch {
          // As the supervised NATS loop does: the task stays leased until its lease runs out.
        }
      }
    } finally {
      done();
    }
  };

  const taskQueue: MemoryTaskQueue = {
    /** A lane job's task goes to its queue's lane, whose consumer is made first if need be. */
    publishTasks: async (record, bodies, signal, ids) => {
      const op = "job.tasks.publish";
      open(op);
      if (signal.aborted) throw new RuntimeStopped({ message: `${op}: aborted` });
      const subject = tasksSubject(op, record);
      if (record.lane) server.lane(record.queue);
      const idPrefix = `${record.id}.${record.submitId}`;
      // In order, failing at the first body too large: the ones before it are stored, as on NATS.
      bodies.forEach((body, n) => {
        const msgId = `${idPrefix}.${ids?.[n] ?? n}`;
        server.checkPayload(op, body, msgId);
        server.tasks.publish(subject, body, msgId);
      });
    },

    createConsumer: async (queue, jobId, settings) => {
      const op = "job.consumer.create";
      open(op);
      const subject = server.names.tasksSubject(
        checkToken(op, "queue", queue),
        checkToken(op, "jobId", jobId, true),
      );
      server.tasks.putConsumer(jobId, subject, {
        // What the server makes of an unset ack wait (0) and max deliver (≤ 0: unlimited).
        ackWaitMs: settings.ackWaitMs > 0 ? settings.ackWaitMs : 30_000,
        maxDeliver: settings.maxDeliver,
      });
    },

    /**
     * A job's consumer exists; a lane job's task is stored, or a result of it
     * (a worker stores the result before it acks the task).
     */
    tasksCommitted: async (job) => {
      const op = "job.tasks.committed";
      if (!job.lane) return consumerOf(op, job.queue, job.id) !== undefined;
      open(op);
      const { tasks, results, names } = server;
      const { submitId } = job;
      const lane = tasks.seqsOf(tasksSubject(op, job));
      if (lane.some((seq) => taskOfSubmit(tasks.get(seq)?.body ?? "", submitId))) return true;
      // Its last result, unless a redrive marker took it back (a redrive that died before its
      // task); a message of another submit's answers alone is passed over.
      const stored = results.read(names.resultsSubject(job.queue, job.id));
      for (let n = stored.length - 1; n >= 0; n--) {
        const said = holdsAnswer(stored[n]?.body ?? "", submitId);
        if (said !== undefined) return said;
      }
      return false;
    },

    /** Made again over the job's tasks stored or held (the memory server never loses one by itself). */
    restoreConsumer: async (job, settings) => {
      const op = "job.consumer.restore";
      if (consumerOf(op, job.queue, job.id)) return "present";
      const stored = server.tasks.count(tasksSubject(op, job)) > 0;
      const held = () => job.runAt !== undefined && delayed.heldCount(job.queue, job.id).then((n) => n > 0);
      if (!stored && !(await held())) return "empty";
      await taskQueue.createConsumer(job.queue, job.id, settings);
      return "restored";
    },

    /** One stream holds every queue's tasks here: its next sequence. */
    tasksMark: async (_job) => {
      open("job.tasks.mark");
      return server.tasks.nextSeq;
    },

    /** A lane job's task only: the lane consumer serves the queue's other lane jobs. */
    removeTasks: async (job, below) => {
      const op = "job.tasks.remove";
      open(op);
      const subject = tasksSubject(op, job);
      if (job.runAt !== undefined) delayed.unhold(job);
      // The purge first, as on NATS.
      server.tasks.purge(subject, below);
      if (!job.lane) server.tasks.deleteConsumer(job.id);
    },

    removeTaskMessages: async (job, tasks) => {
      const op = "job.tasks.remove-messages";
      open(op);
      checkToken(op, "queue", job.queue);
      const subject = taskSubjectOf(server.names, job);
      // Only while it is still the job's task of that index, as on NATS.
      for (const { seq, index } of tasks) {
        const stored = server.tasks.get(seq);
        if (stored?.subject === subject && taskIndexOf(stored.body) === index) server.tasks.remove(seq);
      }
    },

    /** Nobody listens to job announcements in memory: every runtime on the server watches the records. */
    announceCreated: async (queue, _jobId) => {
      open("job.announce");
      checkToken("job.announce", "queue", queue);
    },

    /**
     * One task at a time is leased and handed over, so none is leased ahead of
     * `onTask` (the port allows up to `maxMessages`).
     */
    consumeTasks: async (queue, jobId, _maxMessages, onTask, signal) => {
      const consumer = consumerOf("job.tasks.consume", queue, jobId);
      if (!consumer) return "gone";
      return deliver(consumer, onTask, signal);
    },

    /** As `consumeTasks`, from the queue's lane (made if need be); each lease names its job. */
    consumeLane: async (queue, _maxMessages, onTask, signal) => {
      const op = "job.lane.consume";
      open(op);
      await deliver(server.lane(checkToken(op, "queue", queue)), onTask, signal);
      // Never "gone": nothing deletes a lane consumer.
      return "stopped";
    },

    /** Each job consumer of the queue (its subject is the job's), and its lane if made or holding tasks. */
    queueConsumers: async (queue) => {
      const op = "job.queue.consumers";
      open(op);
      const { tasks, names } = server;
      checkToken(op, "queue", queue);
      const jobIds = tasks
        .consumers()
        .filter((consumer) => consumer.subject === names.tasksSubject(queue, consumer.name))
        .map((consumer) => consumer.name);
      const laneTask = names.laneSubject(queue, "");
      const lane =
        tasks.consumer(memoryLaneName(queue)) !== undefined ||
        tasks.subjects().some((subject) => subject.startsWith(laneTask));
      return { jobIds, lane };
    },

    /** A lane job has none of its own: the lane's counts are every lane job's. */
    consumerCounts: async (job) => {
      const op = "job.consumer.counts";
      if (!job.lane) return consumerOf(op, job.queue, job.id)?.counts();
      open(op);
      return undefined;
    },
  };
  return taskQueue;
};
