import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { RevisionConflict } from "../../kernel/errors.ts";
import { decodeRecord, encodeRecord, type JobRecord, type JobSettings } from "../../kernel/job-record.ts";
import { childLogger } from "../../kernel/logger.ts";
import { type BrokerNames, brokerNames } from "../names.ts";
import { ClientSetups } from "./client-setups.ts";
import type { NatsContext, RunOptions } from "./nats-context.ts";
import { publishPipelined } from "./publish-pipelined.ts";
import { QueueStreams } from "./queue-streams.ts";
import { ensureBucket, ensureStream, isNotFound, nanos, Replicas } from "./streams.ts";

const encoder = new TextEncoder();

interface Handles {
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly kv: KV;
}

export interface BrokerSettings {
  /** How long results (and so `job.results()`) and captured advisories are kept (default 7 days). */
  readonly retentionMs: number;
}

/**
 * How jetstate's pull loops (a worker's tasks, a job's results feed, a
 * queue's advisories, the job-record watch) notice that their consumer is
 * lost: a new leader elected elsewhere, the consumer or its stream deleted,
 * a server back with an empty store. nats.js counts two missed idle
 * heartbeats, then looks the consumer up; with `abort_on_missing_resource`
 * a consumer or stream that is gone ends the loop, and `superviseLoop`
 * starts it again (or the loop says "gone"). With nats.js's defaults (30 s
 * expiry, a heartbeat every 15 s, 30 s between failed look-ups) that took
 * 30–45 s; with these a lost consumer is noticed in ~2 s, and a failed
 * look-up (no leader yet) is tried again every few seconds. The cost is an
 * idle loop's heartbeat every second and a pull request every 3 s; the hot
 * path's pulls are sized by `max_messages`, not by the expiry (`npm run bench`).
 */
export const pullLoop = { expires: 3000, idle_heartbeat: 1000, abort_on_missing_resource: true } as const;

/** How long a task loop may have nothing before it checks that it still has a pull at its consumer. */
export const stuckCheckMs = 5000;

/** A pull loop's end because its consumer or stream is gone (deleted, or lost with the server's store). */
export const isConsumerGone = (error: unknown): boolean => {
  if (isNotFound(error)) return true;
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  return code === 409 && typeof message === "string" && /(consumer|stream) deleted/.test(message);
};

/** JetStream "stream not found": the stream itself is gone, not just a consumer. */
export const isStreamGone = (error: unknown): boolean =>
  error instanceof JetStreamApiError && error.code === 10059;

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

  createRecord(record: JobRecord): Promise<number> {
    return this.#run("job.record.create", ({ kv }) =>
      kv.create(record.id, encodeRecord(record)).catch(casConflict(record.id)),
    );
  }

  getRecord(id: string): Promise<{ record: JobRecord; revision: number } | undefined> {
    return this.#run("job.record.get", async ({ kv }) => {
      const entry = await kv.get(id);
      if (entry?.operation !== "PUT") return undefined;
      return { record: decodeRecord(entry.string()), revision: entry.revision };
    });
  }

  updateRecord(record: JobRecord, revision: number): Promise<number> {
    return this.#run("job.record.update", ({ kv }) =>
      kv.update(record.id, encodeRecord(record), revision).catch(casConflict(record.id)),
    );
  }

  deleteRecord(id: string, revision: number): Promise<void> {
    return this.#run("job.record.delete", ({ kv }) =>
      kv.delete(id, { previousSeq: revision }).catch(casConflict(id)),
    );
  }

  listRecords(): Promise<JobRecord[]> {
    return this.#run("job.record.list", async ({ kv }) => {
      const records: JobRecord[] = [];
      for await (const key of await kv.keys()) {
        const entry = await kv.get(key);
        if (entry && entry.operation === "PUT") records.push(decodeRecord(entry.string()));
      }
      return records;
    });
  }

  /**
   * Calls `onRecord` with every current record, then with every change, until
   * the client or signal ends. Not `kv.watch()`: its ordered consumer, once
   * the bucket is lost (a server back with an empty store), waits for the
   * bucket to come back and then goes on from the old sequence, skipping
   * every record written to the new bucket. This one ends instead when its
   * stream or consumer is gone (`pullLoop`), and the next one reads from the
   * start again.
   */
  async watchRecords(nc: NatsConnection, onRecord: (record: JobRecord) => void, signal: AbortSignal) {
    const { js } = await this.handles(nc);
    const bucket = `KV_${this.names.jobsBucket}`;
    try {
      const consumer = await js.consumers.get(bucket, {
        // One subject as a string: a list needs nats-server 2.10.
        filter_subjects: `$KV.${this.names.jobsBucket}.>`,
        deliver_policy: DeliverPolicy.LastPerSubject,
      });
      const messages = await consumer.consume({ ...pullLoop });
      const stop = () => void messages.close();
      signal.addEventListener("abort", stop, { once: true });
      void nc.closed().then(stop);
      try {
        for await (const m of messages) {
          // A deleted or purged key is a marker without a record.
          const operation = m.headers?.get("KV-Operation");
          if (operation === "DEL" || operation === "PURGE" || m.data.length === 0) continue;
          onRecord(decodeRecord(m.string()));
        }
      } finally {
        signal.removeEventListener("abort", stop);
      }
    } catch (error) {
      throw this.setups.afterFailure(nc, error, "job.record.watch");
    }
  }

  // ---- tasks ----

  /**
   * Publishes the job's tasks, pipelined, each with message id
   * `<jobId>.<submitId>.<n>`: a retried batch (after a timeout whose outcome
   * is unknown) cannot duplicate a task. Invisible to workers until the
   * consumer exists.
   */
  publishTasks(record: JobRecord, bodies: readonly string[], signal: AbortSignal): Promise<void> {
    const subject = this.names.tasksSubject(record.queue, record.id);
    const idPrefix = `${record.id}.${record.submitId}`;
    return this.#runOnQueue(
      "job.tasks.publish",
      record.queue,
      // Not js.publish() per task: its per-request machinery was most of a submit's CPU.
      (_h, nc) =>
        publishPipelined(nc, {
          subject,
          bodies,
          msgId: (n) => `${idPrefix}.${n}`,
          window: 256,
          ackTimeoutMs: 5000, // js.publish()'s default timeout
          signal,
        }),
      { timeoutMs: Math.max(30_000, bodies.length * 2), signal },
    );
  }

  /** The commit point of a submit: before it no worker can see a task of the job. */
  createConsumer(queue: string, jobId: string, settings: JobSettings): Promise<void> {
    return this.#runOnQueue("job.consumer.create", queue, async ({ jsm }) => {
      await jsm.consumers.add(this.names.tasksStream(queue), {
        durable_name: jobId,
        filter_subject: this.names.tasksSubject(queue, jobId),
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(settings.ackWaitMs),
        max_deliver: settings.maxDeliver,
        max_ack_pending: 20_000,
        deliver_policy: DeliverPolicy.All,
      });
    });
  }

  /**
   * Tasks waiting and tasks held by workers (leased, not answered), for the
   * stall log. A queue whose stream is missing has no consumer: nothing is set up.
   */
  consumerCounts(
    queue: string,
    jobId: string,
  ): Promise<{ waiting: number; held: number; redelivered: number } | undefined> {
    return this.#run("job.consumer.counts", async ({ jsm }) => {
      try {
        const info = await jsm.consumers.info(this.names.tasksStream(queue), jobId);
        return { waiting: info.num_pending, held: info.num_ack_pending, redelivered: info.num_redelivered };
      } catch (error) {
        if (isNotFound(error)) return undefined;
        throw error;
      }
    });
  }

  /** The commit point's witness (the reaper); a queue whose stream is missing has no consumer. */
  consumerExists(queue: string, jobId: string): Promise<boolean> {
    return this.#run("job.consumer.info", async ({ jsm }) => {
      try {
        await jsm.consumers.info(this.names.tasksStream(queue), jobId);
        return true;
      } catch (error) {
        if (isNotFound(error)) return false;
        throw error;
      }
    });
  }

  /**
   * Deletes the job's consumer (workers' loops for it end) and purges its
   * remaining tasks. A queue whose stream is missing (a submit that failed
   * before setting it up) holds nothing to remove.
   */
  removeTasks(queue: string, jobId: string): Promise<void> {
    return this.#run("job.tasks.remove", async ({ jsm }) => {
      const stream = this.names.tasksStream(queue);
      const unlessNotFound = (error: unknown) => {
        if (!isNotFound(error)) throw error;
      };
      await jsm.consumers.delete(stream, jobId).catch(unlessNotFound);
      await jsm.streams
        .purge(stream, { filter: this.names.tasksSubject(queue, jobId) })
        .catch(unlessNotFound);
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
    const publish = async ({ js }: Handles) => {
      await js.publish(subject, body, { msgID: msgId });
    };
    // Hot path, once per batch: when connected and set up, publish at once;
    // the operation wrapper (wait for connected, deadline, retry) cost more
    // than the publish. Any failure takes the full path, same message id, so
    // the retry can only land once.
    const nc = this.#core.connection.current();
    const ready = nc && this.#ready.get(nc);
    if (!ready) return this.#publishResultsRetrying(publish);
    return publish(ready).catch((error) => {
      this.setups.afterFailure(nc, error, "job.results.publish");
      return this.#publishResultsRetrying(publish);
    });
  }

  #publishResultsRetrying(publish: (h: Handles) => Promise<void>): Promise<void> {
    const budgetMs = this.#core.options.connection.publishRetryMs;
    return this.#run("job.results.publish", publish, {
      timeoutMs: budgetMs,
      // Bounded by the budget, not by a count.
      retry: { attempts: Number.MAX_SAFE_INTEGER, initialDelayMs: 100, maxDelayMs: 1000 },
    });
  }

  /**
   * Reads the job's results from stream sequence `fromSeq` on with a
   * throw-away consumer (no acks), until the client closes or `signal` aborts.
   */
  async readResults(
    nc: NatsConnection,
    queue: string,
    jobId: string,
    fromSeq: number,
    onMessage: (body: Uint8Array, seq: number, pending: number) => void,
    signal: AbortSignal,
    /** Called at once when there is nothing to read yet. */
    onCaughtUp?: () => void,
  ): Promise<void> {
    const { js, jsm } = await this.handles(nc).catch((error) =>
      Promise.reject(this.setups.afterFailure(nc, error, "job.results.read")),
    );
    const info = await jsm.consumers.add(this.names.resultsStream, {
      filter_subject: this.names.resultsSubject(queue, jobId),
      ack_policy: AckPolicy.None,
      deliver_policy: fromSeq > 1 ? DeliverPolicy.StartSequence : DeliverPolicy.All,
      ...(fromSeq > 1 ? { opt_start_seq: fromSeq } : {}),
      inactive_threshold: nanos(60_000),
    });
    if (info.num_pending === 0) onCaughtUp?.();
    const consumer = await js.consumers.get(this.names.resultsStream, info.name);
    const messages = await consumer.consume({ max_messages: 256, ...pullLoop });
    const stop = () => void messages.close();
    signal.addEventListener("abort", stop, { once: true });
    void nc.closed().then(stop);
    try {
      for await (const m of messages) onMessage(m.data, m.seq, m.info.pending);
    } catch (error) {
      throw this.setups.afterFailure(nc, error, "job.results.read");
    } finally {
      signal.removeEventListener("abort", stop);
      jsm.consumers.delete(this.names.resultsStream, info.name).catch(() => undefined);
    }
  }

  /**
   * Delivers the job's tasks to `onTask` until the consumer is deleted (the
   * job finished or was cancelled: returns "gone"), the client closes or
   * `signal` aborts. `maxMessages` bounds the leases held but not yet started.
   */
  async consumeTasks(
    nc: NatsConnection,
    queue: string,
    jobId: string,
    maxMessages: number,
    onTask: (msg: JsMsg) => void | Promise<void>,
    signal: AbortSignal,
  ): Promise<"gone" | "ended"> {
    const { js } = await this.queueHandles(nc, queue);
    let consumer: Awaited<ReturnType<JetStreamClient["consumers"]["get"]>>;
    try {
      consumer = await js.consumers.get(this.names.tasksStream(queue), jobId);
    } catch (error) {
      if (isStreamGone(error)) this.setups.forget(nc);
      if (isNotFound(error)) return "gone";
      throw error;
    }
    // Refill when half the leases are used, in pulls of half the window
    // (nats.js: at a quarter, pulls of a quarter): half the pull requests for
    // the same bound on leases held. With 50 leases the consume phase took
    // 8-23 % less time with a CPU hog running, the same without (bench/README.md).
    const messages = await consumer.consume({
      max_messages: maxMessages,
      threshold_messages: Math.max(1, Math.floor(maxMessages / 2)),
      ...pullLoop,
    });
    const stop = () => void messages.close();
    signal.addEventListener("abort", stop, { once: true });
    void nc.closed().then(stop);
    const idle = { since: Date.now(), busy: false };
    const watchdog = setInterval(() => this.#restartIfNotPulling(consumer, jobId, idle, stop), stuckCheckMs);
    try {
      for await (const m of messages) {
        idle.busy = true; // waiting for a free slot is not being stuck
        await onTask(m);
        idle.since = Date.now();
        idle.busy = false;
      }
    } catch (error) {
      // The job's consumer deleted (the job ended) or lost with its stream: nothing left to pull.
      if (!isConsumerGone(error)) throw error;
      if (isStreamGone(error)) this.setups.forget(nc);
      return "gone";
    } finally {
      clearInterval(watchdog);
      signal.removeEventListener("abort", stop);
    }
    return "ended";
  }

  /**
   * Ends a task loop that has had nothing for `stuckCheckMs` while its job's
   * tasks wait and no pull at all is registered at the consumer: its pulls
   * were lost (the consumer's leader moved) and nats.js did not notice. Seen
   * in the chaos suite: a node killed, every worker still running, the job
   * stalled for good with "4 tasks wait, 0 held". The loop's supervisor
   * starts it again, with a new pull. Nothing happens while messages flow or
   * the loop waits for a free slot (a busy worker does not pull).
   */
  #restartIfNotPulling(
    consumer: Awaited<ReturnType<JetStreamClient["consumers"]["get"]>>,
    jobId: string,
    idle: { since: number; busy: boolean },
    restart: () => void,
  ): void {
    if (idle.busy || Date.now() - idle.since < stuckCheckMs) return;
    consumer.info().then(
      (info) => {
        if (info.num_pending === 0 || info.num_waiting > 0) return;
        this.#core.logger.warn(
          { jobId, waiting: info.num_pending, held: info.num_ack_pending },
          "task loop has no pull at its consumer while tasks wait; pulling again",
        );
        restart();
      },
      // No answer (an election going on): the consume's own heartbeats handle that.
      (error) => this.#core.logger.debug({ jobId, err: error }, "task loop check failed"),
    );
  }
}

/** KV compare-and-set failures become `RevisionConflict`: the caller re-reads and re-decides. */
const casConflict =
  (key: string) =>
  (error: unknown): never => {
    if (error instanceof JetStreamApiError && error.code === 10071) {
      throw new RevisionConflict({ message: `job record ${key} changed concurrently`, key });
    }
    throw error;
  };
