import {
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import type { JobRecord, JobSettings, JobTasksRef, SubmitTasksRef } from "../../kernel/job-record.ts";
import { childLogger } from "../../kernel/logger.ts";
import type { TaskMessageRef } from "../dead-letters.ts";
import type { RecordsPage, RecordsPageQuery } from "../job-records.ts";
import { type BrokerNames, brokerNames } from "../names.ts";
import type { ConsumerRestore } from "../task-queue.ts";
import { ClientSetups } from "./client-setups.ts";
import { NatsJobRecords, type RecordMarker } from "./job-records.ts";
import { NatsJobTasks } from "./job-tasks.ts";
import type { NatsContext, RunOptions } from "./nats-context.ts";
import { PubAcks } from "./pub-acks.ts";
import { QueueStreams } from "./queue-streams.ts";
import { duplicateWindowWithin, ensureBucket, ensureStream, isNotFound, Replicas } from "./streams.ts";

// Moved with the records and the tasks; the rest of the adapter imports them from here.
export { isWrongLastSequence } from "./job-records.ts";
export { deleteLaneTasks } from "./job-tasks.ts";

interface Handles {
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly kv: KV;
}

export interface BrokerSettings {
  /** How long results (and so `job.results()`) and captured advisories are kept (default 7 days). */
  readonly retentionMs: number;
  /** Each job's own consumer kept in the server's memory (`jobs.memoryConsumers`). */
  readonly memoryConsumers: boolean;
}

/**
 * JetStream and KV operations of the job protocol. Each public method is one
 * operation run through the supervised connection (deadline, retry of
 * transient errors); the shared streams, bucket and handles are set up once
 * per client, a queue's own streams once per client and queue (`QueueStreams`),
 * and all of it again after an operation found something missing (`setups`).
 */
export class NatsJobBroker {
  readonly names: BrokerNames;
  /** Each queue's tasks and advisories streams. */
  readonly queues: QueueStreams;
  /** Everything set up per client, by this broker and its parts; forgotten together. */
  readonly setups = new ClientSetups();
  /** The replica count of what jetstate creates, and the report of existing streams that differ. */
  readonly replicas: Replicas;
  readonly #core: NatsContext;
  readonly #settings: BrokerSettings;
  readonly #handles = this.setups.cache<Promise<Handles>>();
  /** Each client's PubAcks: kept for the client's life (a setup forgotten does not end its subscription). */
  readonly #acks = new WeakMap<NatsConnection, PubAcks>();
  /** The same handles once set up, for hot paths that must not await. */
  readonly #ready = this.setups.cache<Handles>();
  /** The job records, and the decoded records the watches share. */
  readonly #records: NatsJobRecords;
  /** A job's tasks and its consumer. */
  readonly #tasks: NatsJobTasks;

  constructor(core: NatsContext, settings: BrokerSettings) {
    this.#core = core;
    this.#settings = settings;
    this.names = brokerNames(core.options.prefix);
    this.replicas = new Replicas(core.options.replicas, childLogger(core.logger, { actor: "runtime" }));
    this.queues = new QueueStreams(this.names, settings.retentionMs, this.setups, this.replicas);
    this.#records = new NatsJobRecords(this, this.names.jobsBucket);
    this.#tasks = new NatsJobTasks(this, settings.memoryConsumers);
  }

  /** `NatsJobRecords.decodeWatched`: a record as a watch reads it, decoded once for every watch. */
  decodeWatched(text: string): JobRecord {
    return this.#records.decodeWatched(text);
  }

  /** The client's PubAcks: one reply subscription for every publish this broker awaits on it. */
  acks(nc: NatsConnection): PubAcks {
    let acks = this.#acks.get(nc);
    if (!acks || acks.broken) {
      acks = new PubAcks(nc, pubAckTimeoutMs);
      this.#acks.set(nc, acks);
    }
    return acks;
  }

  /**
   * A compare-and-set write of a KV key through the client's PubAcks: the
   * publish `kv.update` makes (`kv.create`'s first try with `previous` 0),
   * without its request. Resolves with the key's new revision; a stale
   * `previous` fails with the JetStreamApiError "wrong last sequence".
   */
  async writeKey(nc: NatsConnection, bucket: string, key: string, value: string, previous: number) {
    const h = headers();
    h.set("Nats-Expected-Last-Subject-Sequence", String(previous));
    return (await this.acks(nc).publish(`$KV.${bucket}.${key}`, value, h)).seq;
  }

  /**
   * Streams, bucket and API handles for this client; set up on first use,
   * after a new client, and again after an operation found something missing.
   */
  handles(nc: NatsConnection): Promise<Handles> {
    let handles = this.#handles.get(nc);
    if (!handles) {
      const made = this.#setup(nc);
      made.then(
        (ready) => {
          if (this.#handles.get(nc) === made) this.#ready.set(nc, ready);
        },
        () => {
          if (this.#handles.get(nc) === made) this.#handles.delete(nc);
        },
      );
      this.#handles.set(nc, made);
      handles = made;
    }
    return handles;
  }

  async #setup(nc: NatsConnection): Promise<Handles> {
    const jsm = await jetstreamManager(nc);
    const n = this.names;
    await ensureStream(
      jsm,
      {
        name: n.resultsStream,
        subjects: [`${this.#core.options.prefix}.results.>`],
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        ...duplicateWindowWithin(this.#settings.retentionMs),
      },
      this.replicas,
    );
    const kv = await ensureBucket(
      nc,
      jsm,
      n.jobsBucket,
      { history: 1, storage: StorageType.File },
      this.replicas,
    );
    return { js: jetstream(nc), jsm, kv };
  }

  /**
   * Runs `op` through the supervised connection (deadline, retry of
   * transient errors); an attempt that finds something set up missing makes
   * the next attempt set it up again (`ClientSetups`).
   */
  run<A>(name: string, op: (nc: NatsConnection, signal: AbortSignal) => Promise<A>, options?: RunOptions) {
    return this.setups.run(this.#core, name, op, options);
  }

  /**
   * Deletes a consumer in the background, among the runtime's loops: tried
   * again while the server does not answer (the connection down), for at
   * most `withinMs` (after its inactive threshold the server has removed it
   * itself); one already gone is deleted. What a reader ended while cut off
   * held is gone once the connection is back, not a minute later.
   */
  dropConsumerLater(stream: string, name: string, withinMs: number): void {
    this.#core.loops.track(`drop-consumer:${name}`, () =>
      this.run(
        "consumer.drop",
        async (nc) => {
          const { jsm } = await this.handles(nc);
          await jsm.consumers.delete(stream, name).catch((error: unknown) => {
            if (!isNotFound(error)) throw error;
          });
        },
        // Every attempt the deadline leaves room for, not the runtime's few: a connection that
        // still counts itself connected (a partition with no reset) spends its request timeout on
        // each, and three were over ~16 s after the cut (a review).
        {
          timeoutMs: withinMs,
          retry: { attempts: Number.MAX_SAFE_INTEGER, initialDelayMs: 250, maxDelayMs: 2000 },
        },
      ).catch((error: unknown) =>
        this.#core.logger.debug({ err: error, consumer: name }, "consumer not deleted; it expires by itself"),
      ),
    );
  }

  /** The handles, with the queue's own streams set up on this client (info only when they exist). */
  async queueHandles(nc: NatsConnection, queue: string): Promise<Handles> {
    const handles = await this.handles(nc);
    await this.queues.ensure(nc, handles.jsm, queue);
    return handles;
  }

  #run<A>(name: string, op: (h: Handles, nc: NatsConnection) => Promise<A>, options?: RunOptions) {
    return this.run(name, async (nc) => op(await this.handles(nc), nc), options);
  }

  // ---- job records (KV, compare-and-set on the revision): `NatsJobRecords` ----

  createRecord(record: JobRecord): Promise<number> {
    return this.#records.createRecord(record);
  }

  getRecord(id: string): Promise<{ record: JobRecord; revision: number } | undefined> {
    return this.#records.getRecord(id);
  }

  updateRecord(record: JobRecord, revision: number): Promise<number> {
    return this.#records.updateRecord(record, revision);
  }

  deleteRecord(id: string, revision: number): Promise<void> {
    return this.#records.deleteRecord(id, revision);
  }

  listRecords(): Promise<JobRecord[]> {
    return this.#records.listRecords();
  }

  /** Every record and the delete markers older versions left (cleanup removes those). */
  listRecordsAndMarkers(): ReturnType<NatsJobRecords["listRecordsAndMarkers"]> {
    return this.#records.listRecordsAndMarkers();
  }

  removeRecordMarkers(markers: readonly RecordMarker[]): Promise<number> {
    return this.#records.removeMarkers(markers);
  }

  listRecordsPage(query: RecordsPageQuery): Promise<RecordsPage> {
    return this.#records.listRecordsPage(query);
  }

  // ---- tasks: `NatsJobTasks` ----

  publishTasks(
    record: JobRecord,
    bodies: readonly string[],
    signal: AbortSignal,
    ids?: readonly string[],
  ): Promise<void> {
    return this.#tasks.publishTasks(record, bodies, signal, ids);
  }

  createConsumer(queue: string, jobId: string, settings: JobSettings): Promise<void> {
    return this.#tasks.createConsumer(queue, jobId, settings);
  }

  restoreConsumer(
    job: JobTasksRef,
    settings: JobSettings,
    held: () => Promise<boolean>,
  ): Promise<ConsumerRestore> {
    return this.#tasks.restoreConsumer(job, settings, held);
  }

  consumerCounts(
    job: JobTasksRef,
  ): Promise<{ waiting: number; held: number; redelivered: number } | undefined> {
    return this.#tasks.consumerCounts(job);
  }

  tasksCommitted(job: SubmitTasksRef): Promise<boolean> {
    return this.#tasks.tasksCommitted(job);
  }

  tasksMark(job: JobTasksRef): Promise<number> {
    return this.#tasks.tasksMark(job);
  }

  removeTasks(job: JobTasksRef, below?: number): Promise<void> {
    return this.#tasks.removeTasks(job, below);
  }

  removeTaskMessages(job: JobTasksRef, tasks: readonly TaskMessageRef[]): Promise<void> {
    return this.#tasks.removeTaskMessages(job, tasks);
  }

  announceCreated(queue: string, jobId: string): Promise<void> {
    return this.#tasks.announceCreated(queue, jobId);
  }

  /**
   * A copy of a task message stored again (`TaskLease.putBack`). One try,
   * bounded by a PubAck's wait: a stopping worker waits for it (a refused
   * publish, a user whose grants predate put-backs, gets no PubAck).
   */
  republishTask(subject: string, data: Uint8Array, msgId: string): Promise<void> {
    return this.#run(
      "job.task.putback",
      async (_h, nc) => {
        await this.acks(nc).publish(subject, data, msgIdHeader(msgId));
      },
      { timeoutMs: pubAckTimeoutMs, retry: { attempts: 1, initialDelayMs: 0 } },
    );
  }

  // ---- results ----

  /**
   * One results message per batch; the id makes a retried publish land once.
   * A transient failure is retried for `connection.publishRetryMs` (default
   * 15 s, a leader election takes ~5 s), pausing 100 ms doubling up to 1 s,
   * with the same message id every time: a batch given up is released and
   * its tasks run again.
   */
  publishResults(queue: string, jobId: string, body: string, msgId: string): Promise<void> {
    const subject = this.names.resultsSubject(queue, jobId);
    const publish = async (_h: Handles, nc: NatsConnection) => {
      await this.acks(nc).publish(subject, body, msgIdHeader(msgId));
    };
    // Hot path, once per batch: when connected and set up, publish at once;
    // the operation wrapper (wait for connected, deadline, retry) cost more
    // than the publish. Any failure takes the full path, same message id, so
    // the retry can only land once.
    const nc = this.#core.connection.current();
    const ready = nc && this.#ready.get(nc);
    if (!ready) return this.#publishResultsRetrying(publish);
    return publish(ready, nc).catch((error) => {
      this.setups.afterFailure(nc, error, "job.results.publish");
      return this.#publishResultsRetrying(publish);
    });
  }

  #publishResultsRetrying(publish: (h: Handles, nc: NatsConnection) => Promise<void>): Promise<void> {
    const budgetMs = this.#core.options.connection.publishRetryMs;
    return this.#run("job.results.publish", publish, {
      timeoutMs: budgetMs,
      // Bounded by the budget, not by a count.
      retry: { attempts: Number.MAX_SAFE_INTEGER, initialDelayMs: 100, maxDelayMs: 1000 },
    });
  }
}

/** How long a PubAck is awaited, as nats.js's JetStream context does by default. */
const pubAckTimeoutMs = 5000;

/** The headers of a publish with a message id (the stream drops a second copy within its window). */
const msgIdHeader = (msgId: string) => {
  const h = headers();
  h.set("Nats-Msg-Id", msgId);
  return h;
};
