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
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { decodeRecord, encodeRecord, type JobRecord, type JobSettings } from "../../effects/job-record.ts";
import { RevisionConflict } from "../../errors.ts";
import type { RunOptions, RuntimeCore } from "../../runtime.ts";
import { type BrokerNames, brokerNames } from "../names.ts";
import { publishPipelined } from "./publish-pipelined.ts";

const nanos = (ms: number) => Math.round(ms * 1_000_000);
const encoder = new TextEncoder();

interface Handles {
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly kv: KV;
}

export interface BrokerSettings {
  /** How long results (and so `job.results()`) are kept (default 7 days). */
  readonly resultsMaxAgeMs: number;
}

/**
 * JetStream and KV operations of the job protocol. Each public method is one
 * operation run through the supervised connection (deadline, retry of
 * transient errors); streams, bucket and handles are set up once per client.
 */
export class NatsJobBroker {
  readonly names: BrokerNames;
  readonly #core: RuntimeCore;
  readonly #settings: BrokerSettings;
  readonly #handles = new WeakMap<NatsConnection, Promise<Handles>>();
  /** The same handles once set up, for hot paths that must not await. */
  readonly #ready = new WeakMap<NatsConnection, Handles>();

  constructor(core: RuntimeCore, settings: BrokerSettings) {
    this.#core = core;
    this.#settings = settings;
    this.names = brokerNames(core.options.prefix);
  }

  /** Streams, bucket and API handles for this client; created on first use and after a new client. */
  handles(nc: NatsConnection): Promise<Handles> {
    let handles = this.#handles.get(nc);
    if (!handles) {
      handles = this.#setup(nc);
      handles.then(
        (ready) => this.#ready.set(nc, ready),
        () => this.#handles.delete(nc),
      );
      this.#handles.set(nc, handles);
    }
    return handles;
  }

  async #setup(nc: NatsConnection): Promise<Handles> {
    const jsm = await jetstreamManager(nc);
    const n = this.names;
    await ensureStream(jsm, {
      name: n.tasksStream,
      subjects: [`${this.#core.options.prefix}.tasks.>`],
      // Each task is removed once acked/termed: the stream holds only open work.
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      duplicate_window: nanos(120_000),
    });
    await ensureStream(jsm, {
      name: n.resultsStream,
      subjects: [`${this.#core.options.prefix}.results.>`],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_age: nanos(this.#settings.resultsMaxAgeMs),
      duplicate_window: nanos(120_000),
    });
    const kv = await new Kvm(nc).create(n.jobsBucket, { history: 1, storage: StorageType.File });
    return { js: jetstream(nc), jsm, kv };
  }

  #run<A>(name: string, op: (h: Handles, nc: NatsConnection) => Promise<A>, options?: RunOptions) {
    return this.#core.run(name, async (nc) => op(await this.handles(nc), nc), options);
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

  /** Calls `onRecord` with every current record, then with every change, until the client or signal ends. */
  async watchRecords(nc: NatsConnection, onRecord: (record: JobRecord) => void, signal: AbortSignal) {
    const { kv } = await this.handles(nc);
    const iter = await kv.watch();
    const stop = () => iter.stop();
    signal.addEventListener("abort", stop, { once: true });
    try {
      for await (const entry of iter) {
        if (entry.operation === "PUT") onRecord(decodeRecord(entry.string()));
      }
    } finally {
      signal.removeEventListener("abort", stop);
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
    return this.#run(
      "job.tasks.publish",
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
    return this.#run("job.consumer.create", async ({ jsm }) => {
      await jsm.consumers.add(this.names.tasksStream, {
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

  /** Tasks waiting and tasks held by workers (leased, not answered), for the stall log. */
  consumerCounts(jobId: string): Promise<{ waiting: number; held: number; redelivered: number } | undefined> {
    return this.#run("job.consumer.counts", async ({ jsm }) => {
      try {
        const info = await jsm.consumers.info(this.names.tasksStream, jobId);
        return { waiting: info.num_pending, held: info.num_ack_pending, redelivered: info.num_redelivered };
      } catch (error) {
        if (isNotFound(error)) return undefined;
        throw error;
      }
    });
  }

  consumerExists(jobId: string): Promise<boolean> {
    return this.#run("job.consumer.info", async ({ jsm }) => {
      try {
        await jsm.consumers.info(this.names.tasksStream, jobId);
        return true;
      } catch (error) {
        if (isNotFound(error)) return false;
        throw error;
      }
    });
  }

  /** Deletes the job's consumer (workers' loops for it end) and purges its remaining tasks. */
  removeTasks(queue: string, jobId: string): Promise<void> {
    return this.#run("job.tasks.remove", async ({ jsm }) => {
      await jsm.consumers.delete(this.names.tasksStream, jobId).catch((error) => {
        if (!isNotFound(error)) throw error;
      });
      await jsm.streams.purge(this.names.tasksStream, { filter: this.names.tasksSubject(queue, jobId) });
    });
  }

  announceCreated(queue: string, jobId: string): Promise<void> {
    return this.#run("job.announce", async (_h, nc) => {
      nc.publish(this.names.jobCreatedSubject(queue), encoder.encode(jobId));
    });
  }

  // ---- results ----

  /** One results message per batch; the id makes a retried publish land once. */
  publishResults(jobId: string, body: string, msgId: string): Promise<void> {
    const subject = this.names.resultsSubject(jobId);
    const publish = async ({ js }: Handles) => {
      await js.publish(subject, body, { msgID: msgId });
    };
    // Hot path, once per batch: when connected and set up, publish at once;
    // the operation wrapper (wait for connected, deadline, retry) cost more
    // than the publish. Any failure takes the full path, same message id, so
    // the retry can only land once.
    const nc = this.#core.connection.current();
    const ready = nc && this.#ready.get(nc);
    if (!ready) return this.#run("job.results.publish", publish);
    return publish(ready).catch(() => this.#run("job.results.publish", publish));
  }

  /**
   * Reads the job's results from stream sequence `fromSeq` on with a
   * throw-away consumer (no acks), until the client closes or `signal` aborts.
   */
  async readResults(
    nc: NatsConnection,
    jobId: string,
    fromSeq: number,
    onMessage: (body: Uint8Array, seq: number, pending: number) => void,
    signal: AbortSignal,
    /** Called at once when there is nothing to read yet. */
    onCaughtUp?: () => void,
  ): Promise<void> {
    const { js, jsm } = await this.handles(nc);
    const info = await jsm.consumers.add(this.names.resultsStream, {
      filter_subject: this.names.resultsSubject(jobId),
      ack_policy: AckPolicy.None,
      deliver_policy: fromSeq > 1 ? DeliverPolicy.StartSequence : DeliverPolicy.All,
      ...(fromSeq > 1 ? { opt_start_seq: fromSeq } : {}),
      inactive_threshold: nanos(60_000),
    });
    if (info.num_pending === 0) onCaughtUp?.();
    const consumer = await js.consumers.get(this.names.resultsStream, info.name);
    const messages = await consumer.consume({ max_messages: 256 });
    const stop = () => void messages.close();
    signal.addEventListener("abort", stop, { once: true });
    void nc.closed().then(stop);
    try {
      for await (const m of messages) onMessage(m.data, m.seq, m.info.pending);
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
    jobId: string,
    maxMessages: number,
    onTask: (msg: JsMsg) => void | Promise<void>,
    signal: AbortSignal,
  ): Promise<"gone" | "ended"> {
    const { js } = await this.handles(nc);
    let consumer: Awaited<ReturnType<JetStreamClient["consumers"]["get"]>>;
    try {
      consumer = await js.consumers.get(this.names.tasksStream, jobId);
    } catch (error) {
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
    });
    let gone = false;
    const stop = () => void messages.close();
    signal.addEventListener("abort", stop, { once: true });
    void nc.closed().then(stop);
    void (async () => {
      for await (const s of messages.status()) {
        if (s.type === "consumer_deleted" || s.type === "consumer_not_found") {
          gone = true;
          stop();
          return;
        }
      }
    })();
    try {
      for await (const m of messages) await onTask(m);
    } finally {
      signal.removeEventListener("abort", stop);
    }
    return gone ? "gone" : "ended";
  }
}

/**
 * Creates the stream unless it exists. An existing stream is used as it is
 * (another runtime may have made it with other limits); two runtimes racing
 * to create it both end up using the one that won.
 */
export const ensureStream = async (
  jsm: JetStreamManager,
  config: Parameters<JetStreamManager["streams"]["add"]>[0],
) => {
  try {
    await jsm.streams.info(config.name);
    return;
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  try {
    await jsm.streams.add(config);
  } catch (error) {
    // Lost the race to a runtime with other settings: theirs stands.
    await jsm.streams.info(config.name).catch(() => Promise.reject(error));
  }
};

export const isNotFound = (error: unknown): boolean =>
  error instanceof JetStreamApiError &&
  (error.code === 10014 || error.code === 10059 || error.status === 404);

/** KV compare-and-set failures become `RevisionConflict`: the caller re-reads and re-decides. */
const casConflict =
  (key: string) =>
  (error: unknown): never => {
    if (error instanceof JetStreamApiError && error.code === 10071) {
      throw new RevisionConflict({ message: `job record ${key} changed concurrently`, key });
    }
    throw error;
  };
