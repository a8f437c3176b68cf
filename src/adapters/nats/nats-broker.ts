import type { JsMsg } from "@nats-io/jetstream";
import { superviseLoop } from "../../effects/supervise-loop.ts";
import { jobIdOfSubject } from "../../kernel/cleanup-plan.ts";
import { isFinal, SubmitPhase } from "../../kernel/job-record.ts";
import { childLogger } from "../../kernel/logger.ts";
import type { Broker } from "../broker.ts";
import { laneConsumer } from "../names.ts";
import type { ScheduleStore } from "../schedule-store.ts";
import type { LaneLease, TaskLease } from "../task-queue.ts";
import { deliveryCountOf, deliverySeqOf } from "./ack-subjects.ts";
import { type ConsumerLife, ConsumerLives, livesOn } from "./consumer-lives.ts";
import { publishNote, watchNotes } from "./core-notes.ts";
import { NatsDeadLetters } from "./dead-letters.ts";
import { NatsDelayedTasks } from "./delayed-tasks.ts";
import { NatsJobBroker } from "./job-broker.ts";
import { cleanupJobs } from "./job-cleanup.ts";
import { NatsJobLeases } from "./job-leases.ts";
import { natsFlows } from "./kv-flows.ts";
import { natsPresence } from "./kv-presence.ts";
import { natsScheduleStore } from "./kv-schedule-store.ts";
import { LateLaneLease, LateTaskLease } from "./late-leases.ts";
import type { NatsContext } from "./nats-context.ts";
import { provisionStores } from "./provisioning.ts";
import { closedPullsRunOutMs, consumeTasks } from "./pull-loops.ts";
import { putBackCopy, type Republish } from "./put-back.ts";
import { natsQueueConsumers } from "./queue-consumers.ts";
import { natsQueueControls } from "./queue-controls.ts";
import { natsQueueStats } from "./queue-stats.ts";
import { type ChangeCursor, watchRecordChanges } from "./record-changes.ts";
import { ResultsFeeds } from "./results-feed.ts";
import { NatsTaskLeasing } from "./task-leasing.ts";

export interface NatsBrokerOptions {
  /** How long results and dead letters are kept (the streams' max age). */
  readonly retentionMs: number;
  /** This runtime's name in supervision leases. */
  readonly holder: string;
  /** How long a queue's results feed runs on with no job of the queue read (default 30 s). */
  readonly resultsFeedIdleMs?: number;
  /** Each job's own consumer kept in the server's memory (`jobs.memoryConsumers`). */
  readonly memoryConsumers?: boolean;
}

export interface NatsBroker extends Broker {
  readonly kind: "nats";
  /** The JetStream-level operations. */
  readonly jetstream: NatsJobBroker;
  /** Recurring jobs (`rt.schedules`), in the `<prefix>_schedules` bucket. */
  readonly schedules: ScheduleStore;
}

const decoder = new TextDecoder();

/** A delivery's reply subject: on nats.js's message class, not its `JsMsg` type (undefined without it). */
const replyOf = (msg: JsMsg): string | undefined => {
  const { reply } = msg as { readonly reply?: unknown };
  return typeof reply === "string" ? reply : undefined;
};

/**
 * A delivered JetStream message seen through the port: ack / nak / term /
 * working go to its reply subject; once its consumer's life is over
 * (`ConsumerLives`), only `working` (an ack, a release, a put-back would
 * land on another message; a lease kept at most delays one whose worker
 * died, and a life taken for over by mistake would otherwise run the task
 * twice at once).
 */
class JsTaskLease implements TaskLease {
  readonly #msg: JsMsg;
  readonly #republish: Republish;
  readonly #life: ConsumerLife;
  #deliveryCount: number | undefined;
  constructor(msg: JsMsg, republish: Republish, life: ConsumerLife) {
    this.#msg = msg;
    this.#republish = republish;
    this.#life = life;
  }
  get body(): string {
    return decoder.decode(this.#msg.data);
  }
  get deliveryCount(): number {
    // Read once: a worker asks as it starts the task and as it answers it.
    if (this.#deliveryCount === undefined) {
      // Without its reply subject, `info` has the count.
      const reply = replyOf(this.#msg);
      this.#deliveryCount =
        (reply === undefined ? undefined : deliveryCountOf(reply)) ?? this.#msg.info.deliveryCount;
    }
    return this.#deliveryCount;
  }
  get seq(): number {
    return this.#msg.seq;
  }
  ack(): void {
    if (!this.#life.over) this.#msg.ack();
  }
  nak(delayMs?: number): void {
    if (!this.#life.over) this.#msg.nak(delayMs);
  }
  handBack(delayMs?: number): void {
    this.nak(Math.max(delayMs ?? 0, closedPullsRunOutMs));
  }
  term(): void {
    if (!this.#life.over) this.#msg.term();
  }
  working(): void {
    this.#msg.working();
  }
  /** Its loop's close is not known here: its pull requests are waited out in full. */
  putBack(keepEveryMs: number, wanted?: () => boolean): Promise<boolean> {
    const { subject, data } = this.#msg;
    return putBackCopy(
      this,
      subject,
      data,
      Date.now(),
      keepEveryMs,
      this.#republish,
      livesOn(this.#life, wanted),
    );
  }
}

/** The life of a delivery's consumer (`ConsumerLives`), by the delivery sequence in its reply subject. */
const lifeOf = (lives: ConsumerLives, msg: JsMsg): ConsumerLife => {
  const reply = replyOf(msg);
  return lives.of(reply === undefined ? undefined : deliverySeqOf(reply));
};

/** A delivery from a queue's lane: its job is the last token of its subject. */
class JsLaneLease extends JsTaskLease implements LaneLease {
  readonly jobId: string;
  constructor(msg: JsMsg, republish: Republish, life: ConsumerLife) {
    super(msg, republish, life);
    this.jobId = jobIdOfSubject(msg.subject);
  }
}

/**
 * A task loop that let go of its buffer ("again": its tasks waited past
 * half their leases) pulls again at once, in the same round of its
 * supervisor: a round that ends that early would otherwise count as a
 * failing one, and wait up to 5 s before the next.
 */
const pullAgainAtOnce = async <E extends string>(round: () => Promise<E | "again">): Promise<E> => {
  for (;;) {
    const end = await round();
    if (end !== "again") return end;
  }
};

/**
 * The broker port on NATS JetStream, over the runtime's one supervised
 * connection. Every long-running loop runs under `superviseLoop`, so a
 * reconnect, a server restart or a replaced client restarts it on the
 * current client instead of stopping it silently.
 */
export const createNatsBroker = (core: NatsContext, options: NatsBrokerOptions): NatsBroker => {
  const js = new NatsJobBroker(core, {
    retentionMs: options.retentionMs,
    memoryConsumers: options.memoryConsumers ?? false,
  });
  const dead = new NatsDeadLetters(core, js, options.retentionMs);
  const leases = new NatsJobLeases(core, js, options.holder);
  const log = childLogger(core.logger, { actor: "runtime" });
  const port = core.connection;
  const feeds = new ResultsFeeds(core, js, log, options.resultsFeedIdleMs);
  const presence = natsPresence(js);
  const taskLeasing = new NatsTaskLeasing(js);
  const delayed = new NatsDelayedTasks(core, js, log);
  const queueControls = natsQueueControls(core, js, log);
  const flows = natsFlows(js);
  const schedules = natsScheduleStore(core, js, js.names.schedulesBucket);
  const republish: Republish = (subject, data, msgId) => js.republishTask(subject, data, msgId);

  /** True while the job's record says it runs (committed, not ended): its tasks are still to pull. */
  const runsStill = async (jobId: string): Promise<boolean> => {
    const found = await js.getRecord(jobId);
    return (
      found !== undefined && found.record.phase === SubmitPhase.committed && !isFinal(found.record.status)
    );
  };

  return {
    kind: "nats",
    jetstream: js,
    schedules,
    leases,
    taskLeasing,
    presence,
    queueControls,
    flows,
    // Read on every submit: from the current client at once, through an operation only while
    // there is none (it waits for the connection).
    maxPayload: () => {
      const info = core.connection.current()?.info;
      return info
        ? Promise.resolve(info.max_payload)
        : js.run("server.info", async (nc) => nc.info?.max_payload ?? 1024 * 1024);
    },

    createRecord: (record) => js.createRecord(record),
    getRecord: (id) => js.getRecord(id),
    updateRecord: (record, revision) => js.updateRecord(record, revision),
    deleteRecord: (id, revision) => js.deleteRecord(id, revision),
    listRecords: () => js.listRecords(),
    listRecordsPage: (query) => js.listRecordsPage(query),
    watchRecordChanges: (onRecord, signal, onWatching, label) => {
      // Shared by the rounds: a restarted round goes on after the last record handed over.
      const cursor: ChangeCursor = {};
      return superviseLoop(
        port,
        (nc, s) => watchRecordChanges(js, nc, cursor, onRecord, s, log, onWatching, label),
        signal,
        { name: "job-record-changes", log },
      );
    },

    publishTasks: (record, bodies, signal, ids) => js.publishTasks(record, bodies, signal, ids),
    createConsumer: (queue, jobId, settings) => js.createConsumer(queue, jobId, settings),
    tasksCommitted: (job) => js.tasksCommitted(job),
    // Made again while tasks of the job are stored, or held until due (moved onto its subject later).
    restoreConsumer: (job, settings) =>
      js.restoreConsumer(job, settings, async () =>
        job.runAt === undefined ? false : (await delayed.heldCount(job.queue, job.id)) > 0,
      ),
    consumerCounts: (job) => js.consumerCounts(job),
    queueConsumers: (queue) => natsQueueConsumers(js, queue),
    tasksMark: (job) => js.tasksMark(job),
    removeTasks: async (job, below) => {
      // Held tasks first: none of them is moved to a subject just purged (one a mover published
      // after the end's mark, `below`, stays until the cleanup pass).
      if (job.runAt !== undefined) await delayed.unhold(job);
      await js.removeTasks(job, below);
    },
    removeTaskMessages: (job, tasks) => js.removeTaskMessages(job, tasks),
    holdTasks: (record, held, signal) => delayed.holdTasks(record, held, signal),
    consumeHeld: (queue, onHeld, signal) => delayed.consumeHeld(queue, onHeld, signal),
    releaseHeld: (task) => delayed.releaseHeld(task),
    heldCount: (queue, jobId) => delayed.heldCount(queue, jobId),
    announceCreated: (queue, jobId) => js.announceCreated(queue, jobId),
    consumeTasks: async (queue, jobId, maxMessages, onTask, signal, stopping) => {
      let gone = false;
      const lives = new ConsumerLives();
      await superviseLoop(
        port,
        async (nc, s) => {
          const end = await pullAgainAtOnce(() =>
            consumeTasks(
              js,
              nc,
              queue,
              jobId,
              maxMessages,
              (m) => onTask(new JsTaskLease(m, republish, lifeOf(lives, m))),
              s,
              core.logger,
              {
                handsBack: () => stopping?.aborted === true,
                late: (m) => onTask(new LateTaskLease(m, republish, lives.caught())),
              },
              lives,
            ),
          );
          // While a consumer's leader is being elected the server may say it is not found: the
          // record says whether the job really ended (an end or a cancel is written before its
          // consumer is deleted). A worker that took such an answer for the end stopped pulling
          // a running job for good (chaos suite: a node killed, the job stalled at 2998/3000).
          if (end === "gone" && (await runsStill(jobId))) return "ended";
          gone = end === "gone";
          return gone ? "done" : end;
        },
        signal,
        { name: `tasks:${jobId}`, log },
      );
      // Its job is over: a delivery of it answered now would land on the next consumer of its name.
      if (gone) lives.end();
      return gone ? "gone" : "stopped";
    },

    consumeLane: async (queue, maxMessages, onTask, signal) => {
      const lives = new ConsumerLives();
      await superviseLoop(
        port,
        async (nc, s) => {
          // Made here if it may be (a worker's role may only look it up; its submitter makes it
          // before the queue's first lane task): each round looks again, after a pause.
          const { jsm } = await js.handles(nc);
          await js.queues
            .ensureLane(nc, jsm, queue)
            .catch((error: unknown) => log.debug({ err: error, queue }, "lane not set up here"));
          const end = await pullAgainAtOnce(() =>
            consumeTasks(
              js,
              nc,
              queue,
              laneConsumer,
              maxMessages,
              (m) => onTask(new JsLaneLease(m, republish, lifeOf(lives, m))),
              s,
              core.logger,
              // Its signal is its worker's: aborted, the worker stops.
              {
                handsBack: () => signal.aborted,
                late: (m) => onTask(new LateLaneLease(m, republish, lives.caught())),
              },
              lives,
            ),
          );
          // Gone (deleted by hand, or lost with the server's store): made again on the next round,
          // here and by this runtime's next lane submit of the queue.
          if (end === "gone") js.queues.forgetLane(nc, queue);
          return "ended";
        },
        signal,
        { name: `lane:${queue}`, log },
      );
      return "stopped";
    },

    publishResults: (queue, jobId, body, msgId) => js.publishResults(queue, jobId, body, msgId),
    readResults: (queue, jobId, onMessage, signal, onCaughtUp, fresh) =>
      feeds.read(
        queue,
        jobId,
        (data, pending) => onMessage(decoder.decode(data), pending),
        signal,
        onCaughtUp,
        fresh,
      ),
    followResults: (queue, jobId, onMessage, { onCaughtUp, fresh = false, onFailed }) =>
      feeds.follow(
        queue,
        jobId,
        (data, pending) => onMessage(decoder.decode(data), pending),
        onCaughtUp,
        fresh,
        (error) => (onFailed ? onFailed(error) : log.warn({ err: error, jobId }, "results follow failed")),
      ),

    publishProgress: (queue, jobId, body) =>
      publishNote(port, js.names.progressSubject(queue, jobId), body, log),
    // The port returns nothing here: the loop ends with `signal` (its handle's, tied to the
    // runtime's stopping) and its body holds only a core subscription, dropped on abort.
    watchProgress: (queue, jobId, onNote, signal) =>
      watchNotes(port, js.names.progressSubject(queue, jobId), onNote, signal, {
        name: `progress:${jobId}`,
        log,
      }),

    ensureDeadLetters: (queue) => dead.ensure(queue),
    storeDeadLetter: (letter, msgId) => dead.store(letter, msgId),
    listDeadLetters: (queue, jobId) => dead.list(queue, jobId),
    removeDeadLetters: (seqs) => dead.remove(seqs),
    processExhausted: (signal, onUnhandled) =>
      dead.processAll(
        signal,
        (queue) =>
          superviseLoop(
            port,
            async (nc, s) => {
              if ((await dead.process(nc, queue, s, onUnhandled)) === "ended") return "ended";
              // Its consumer alone deleted (by hand): the next listing finds the stream and starts the
              // loop again, which makes the consumer again.
              log.info(
                { queue },
                "the queue's advisories stream is gone, or its dead-letters consumer; its dead-letter processing ends until a listing finds the stream",
              );
              return "done";
            },
            signal,
            { name: `dead-letters:${queue}`, log },
          ),
        log,
      ),

    cleanup: (cleanupOptions) => cleanupJobs(core, js, leases, cleanupOptions),
    provision: provisionStores(core, js, {
      dead,
      leases,
      presence,
      taskLeasing,
      queueControls,
      flows,
      schedules,
      delayed,
    }),
    queueStats: (query) => natsQueueStats(js, query),
    close: async () => undefined,
  };
};
