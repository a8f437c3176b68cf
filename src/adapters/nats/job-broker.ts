import {
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import { RevisionConflict } from "../../kernel/errors.ts";
import {
  decodeRecord,
  encodeRecord,
  type JobRecord,
  type JobSettings,
  type JobTasksRef,
} from "../../kernel/job-record.ts";
import { recordPicker, scanBound, type UnreadableRecord } from "../../kernel/list-page.ts";
import { childLogger } from "../../kernel/logger.ts";
import { holdsAnswer } from "../../kernel/wire.ts";
import type { RecordsPage, RecordsPageQuery } from "../job-records.ts";
import { type BrokerNames, brokerNames, taskSubjectOf } from "../names.ts";
import type { ConsumerRestore } from "../task-queue.ts";
import { ClientSetups } from "./client-setups.ts";
import { found, jobConsumerConfig, restoreJobConsumer } from "./job-consumers.ts";
import type { NatsContext, RunOptions } from "./nats-context.ts";
import { PubAcks } from "./pub-acks.ts";
import { publishPipelined } from "./publish-pipelined.ts";
import { QueueStreams } from "./queue-streams.ts";
import {
  ensureBucket,
  ensureStream,
  isNotFound,
  nanos,
  pageBucket,
  Replicas,
  scanBucket,
} from "./streams.ts";
import { deleteSubjectMessages } from "./subject-messages.ts";

const encoder = new TextEncoder();

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
  readonly #decoded = new Map<string, JobRecord>();
  /** The last `decodedKept` record texts this broker wrote: a watch reads each back. */
  readonly #written = new Set<string>();
  /** Each client's PubAcks: kept for the client's life (a setup forgotten does not end its subscription). */
  readonly #acks = new WeakMap<NatsConnection, PubAcks>();
  /** The same handles once set up, for hot paths that must not await. */
  readonly #ready = this.setups.cache<Handles>();

  constructor(core: NatsContext, settings: BrokerSettings) {
    this.#core = core;
    this.#settings = settings;
    this.names = brokerNames(core.options.prefix);
    this.replicas = new Replicas(core.options.replicas, childLogger(core.logger, { actor: "runtime" }));
    this.queues = new QueueStreams(this.names, settings.retentionMs, this.setups, this.replicas);
  }

  /**
   * A record as a watch reads it, decoded once for every watch of this
   * runtime (a worker's and the jobs' read each write: the decode, a parse
   * and a schema check, was ~4 % of a small job's CPU), by its text: the
   * last `decodedKept` texts are kept.
   */
  decodeWatched(text: string): JobRecord {
    const known = this.#decoded.get(text);
    if (known) return known;
    // Frozen: every watch (and a job event's reader) is handed the same object. A text this
    // broker encoded from a record is parsed without the schema check (three writes a small job,
    // each read back by the watches; the check was ~2 % of its CPU): it was a record.
    const record = frozen(this.#written.delete(text) ? (JSON.parse(text) as JobRecord) : decodeRecord(text));
    this.#decoded.set(text, record);
    if (this.#decoded.size > decodedKept) this.#decoded.delete(this.#decoded.keys().next().value as string);
    return record;
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
        max_age: nanos(this.#settings.retentionMs),
        duplicate_window: nanos(120_000),
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

  /** The handles, with the queue's own streams set up on this client (info only when they exist). */
  async queueHandles(nc: NatsConnection, queue: string): Promise<Handles> {
    const handles = await this.handles(nc);
    await this.queues.ensure(nc, handles.jsm, queue);
    return handles;
  }

  #run<A>(name: string, op: (h: Handles, nc: NatsConnection) => Promise<A>, options?: RunOptions) {
    return this.run(name, async (nc) => op(await this.handles(nc), nc), options);
  }

  /** As `#run`, for operations on a queue's own streams: they are set up first. */
  #runOnQueue<A>(
    name: string,
    queue: string,
    op: (h: Handles, nc: NatsConnection) => Promise<A>,
    options?: RunOptions,
  ) {
    return this.run(name, async (nc) => op(await this.queueHandles(nc, queue), nc), options);
  }

  // ---- job records (KV, compare-and-set on the revision) ----

  /** `encodeRecord`, the text remembered as this broker's (`decodeWatched`). */
  #encode(record: JobRecord): string {
    const text = encodeRecord(record);
    this.#written.add(text);
    if (this.#written.size > decodedKept) this.#written.delete(this.#written.values().next().value as string);
    return text;
  }

  createRecord(record: JobRecord): Promise<number> {
    return this.#run("job.record.create", ({ kv }, nc) => {
      const value = this.#encode(record);
      return (
        this.writeKey(nc, this.names.jobsBucket, record.id, value, 0)
          // Taken, or its last entry a delete marker, on which `kv.create` writes (its second step).
          .catch(async (error: unknown) => {
            if (!isWrongLastSequence(error)) throw error;
            const entry = await kv.get(record.id);
            if (entry?.operation !== "DEL" && entry?.operation !== "PURGE") throw error;
            return this.writeKey(nc, this.names.jobsBucket, record.id, value, entry.revision);
          })
          .catch(casConflict(record.id))
      );
    });
  }

  getRecord(id: string): Promise<{ record: JobRecord; revision: number } | undefined> {
    return this.#run("job.record.get", async ({ kv }) => {
      const entry = await kv.get(id);
      if (entry?.operation !== "PUT") return undefined;
      return { record: decodeRecord(entry.string()), revision: entry.revision };
    });
  }

  updateRecord(record: JobRecord, revision: number): Promise<number> {
    return this.#run("job.record.update", (_h, nc) =>
      this.writeKey(nc, this.names.jobsBucket, record.id, this.#encode(record), revision).catch(
        casConflict(record.id),
      ),
    );
  }

  deleteRecord(id: string, revision: number): Promise<void> {
    return this.#run("job.record.delete", ({ kv }) =>
      kv.delete(id, { previousSeq: revision }).catch(casConflict(id)),
    );
  }

  listRecords(): Promise<JobRecord[]> {
    return this.#run("job.record.list", async ({ js, jsm }) =>
      [...(await scanBucket(js, jsm, this.names.jobsBucket)).values()].map(decodeRecord),
    );
  }

  /** One page of records, in the order of their last write (`pageBucket`). */
  listRecordsPage(query: RecordsPageQuery): Promise<RecordsPage> {
    return this.#run("job.record.page", async ({ jsm }, nc) => {
      // Filled afresh by each try of the operation (a retry reads the page again).
      const unreadable: UnreadableRecord[] = [];
      const { items, next } = await pageBucket(nc, jsm, this.names.jobsBucket, {
        after: query.after ?? 0,
        limit: query.limit,
        maxScan: query.maxScan ?? scanBound(query.limit),
        pick: recordPicker(query, unreadable),
      });
      return {
        records: items,
        ...(next === undefined ? {} : { next }),
        ...(unreadable.length === 0 ? {} : { unreadable }),
      };
    });
  }

  // ---- tasks ----

  /**
   * Publishes the job's tasks, pipelined, each with message id
   * `<jobId>.<submitId>.<n>`: a retried batch (after a timeout whose outcome
   * is unknown) cannot duplicate a task. Invisible to workers until the
   * consumer exists; a lane job's task is visible at once (its lane consumer
   * is set up first: the publish is the job's commit point).
   */
  publishTasks(record: JobRecord, bodies: readonly string[], signal: AbortSignal): Promise<void> {
    const subject = taskSubjectOf(this.names, record);
    const idPrefix = `${record.id}.${record.submitId}`;
    return this.#runOnQueue(
      "job.tasks.publish",
      record.queue,
      // Not js.publish() per task: its per-request machinery was most of a submit's CPU.
      async ({ jsm }, nc) => {
        if (record.lane) await this.queues.ensureLane(nc, jsm, record.queue);
        await publishPipelined(this.acks(nc), {
          subject,
          bodies,
          msgId: (n) => `${idPrefix}.${n}`,
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
      await jsm.consumers.add(this.names.tasksStream(queue), this.#consumerConfig(queue, jobId, settings));
    });
  }

  /** `held`: whether tasks of the job wait until due (delayed): then it is made again with none stored. */
  restoreConsumer(
    job: JobTasksRef,
    settings: JobSettings,
    held: () => Promise<boolean>,
  ): Promise<ConsumerRestore> {
    return this.#runOnQueue("job.consumer.restore", job.queue, ({ jsm }) =>
      restoreJobConsumer(jsm, this.names, job, this.#consumerConfig(job.queue, job.id, settings), held),
    );
  }

  #consumerConfig(queue: string, jobId: string, settings: JobSettings) {
    return jobConsumerConfig(this.names, queue, jobId, settings, this.#settings.memoryConsumers);
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
        const info = await jsm.consumers.info(this.names.tasksStream(job.queue), job.id);
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
  tasksCommitted(job: JobTasksRef): Promise<boolean> {
    const n = this.names;
    return this.#run("job.tasks.committed", async ({ jsm }) => {
      const stream = n.tasksStream(job.queue);
      if (!job.lane) return found(jsm.consumers.info(stream, job.id));
      if (await found(jsm.streams.getMessage(stream, { last_by_subj: n.laneSubject(job.queue, job.id) })))
        return true;
      // Its last result, unless a redrive marker took it back (a redrive that died before its task).
      const last = await jsm.streams
        .getMessage(n.resultsStream, { last_by_subj: n.resultsSubject(job.queue, job.id) })
        .catch((error: unknown) => (isNotFound(error) ? null : Promise.reject(error)));
      return last !== null && holdsAnswer(last.string());
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
      const info = await jsm.streams.info(this.names.tasksStream(job.queue)).catch((error: unknown) => {
        if (!isNotFound(error)) throw error;
        return undefined;
      });
      return info ? info.state.last_seq + 1 : 0;
    });
  }

  removeTasks(job: JobTasksRef, below?: number): Promise<void> {
    return this.#run("job.tasks.remove", async ({ jsm }) => {
      const stream = this.names.tasksStream(job.queue);
      const unlessNotFound = (error: unknown) => {
        if (!isNotFound(error)) throw error;
      };
      if (job.lane) return deleteLaneTasks(jsm, stream, this.names.laneSubject(job.queue, job.id), below);
      // Below the mark only: a task stored since (a redrive's) stays. The purge first: on
      // nats-server 2.9 it moves a consumer of the subject to the first task left and forgets
      // the deliveries in flight (`consumer.purge`), so a redrive's task already handed to a
      // worker would never come again while that consumer lived. The consumer is deleted after
      // it, and made again over the tasks still stored (the lost-task check, a takeover).
      if (below === undefined || below > 1)
        await jsm.streams
          .purge(stream, {
            filter: this.names.tasksSubject(job.queue, job.id),
            ...(below === undefined ? {} : { seq: below }),
          })
          .catch(unlessNotFound);
      await jsm.consumers.delete(stream, job.id).catch(unlessNotFound);
    });
  }

  announceCreated(queue: string, jobId: string): Promise<void> {
    return this.#run("job.announce", async (_h, nc) => {
      nc.publish(this.names.jobCreatedSubject(queue), encoder.encode(jobId));
    });
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

/**
 * Deletes a lane job's task messages one by one, never with a filtered
 * purge (see `deleteSubjectMessages`): a purge made the lane skip every
 * other lane job's task stored then (they stayed in the stream, never
 * delivered: 252 of 300 jobs hung in `test/integration/lane.test.ts`).
 * A lane subject holds one task; a few more (a redrive raced) are bounded.
 * Only below `below` when given: a task published since the caller looked stays.
 */
export const deleteLaneTasks = (
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  below?: number,
): Promise<void> =>
  deleteSubjectMessages(jsm, stream, subject, { max: 16, ...(below === undefined ? {} : { below }) });

/** `value` and every object in it, frozen. */
const frozen = <T>(value: T): T => {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) frozen(inner);
    Object.freeze(value);
  }
  return value;
};

/** How many decoded records the watches share (a few ms of writes at a thousand small jobs a second). */
const decodedKept = 128;

/** How long a PubAck is awaited, as nats.js's JetStream context does by default. */
const pubAckTimeoutMs = 5000;

/** The headers of a publish with a message id (the stream drops a second copy within its window). */
const msgIdHeader = (msgId: string) => {
  const h = headers();
  h.set("Nats-Msg-Id", msgId);
  return h;
};

/** JetStream API "wrong last sequence" (10071), and its "unknown" form, as `kv.create` tells them. */
export const isWrongLastSequence = (error: unknown): boolean =>
  error instanceof JetStreamApiError && (error.code === 10071 || error.code === 10164);

/** KV compare-and-set failures become `RevisionConflict`: the caller re-reads and re-decides. */
const casConflict =
  (key: string) =>
  (error: unknown): never => {
    if (error instanceof JetStreamApiError && error.code === 10071) {
      throw new RevisionConflict({ message: `job record ${key} changed concurrently`, key });
    }
    throw error;
  };
