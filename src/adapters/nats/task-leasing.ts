import { createHash } from "node:crypto";
import { JetStreamApiError, jetstreamManager, StorageType } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { createInbox, type NatsConnection } from "@nats-io/transport-node";
import { jobIdOfSubject } from "../../kernel/cleanup-plan.ts";
import { ConnectionUnavailable } from "../../kernel/errors.ts";
import type { JobTasksRef } from "../../kernel/job-record.ts";
import { decodeTask } from "../../kernel/wire.ts";
import { laneConsumer, queueOfStream } from "../names.ts";
import type {
  AnswerClaim,
  AnswerStatus,
  LeasedTask,
  LeaseSettle,
  RecordedAnswer,
  TaskLeasing,
} from "../task-leasing.ts";
import { leaseInfo } from "./ack-subjects.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import { ensureBucket, nanos } from "./streams.ts";

/**
 * How long an answer is remembered (the answers bucket's max age). A receipt
 * never outlives it: the HTTP API caps one receipt's lease below it (a
 * heartbeat renews), so a delivery's answer is known for as long as any
 * receipt of it is valid.
 */
export const answerMemoryMs = 24 * 3600_000;
const wrongLastSequence = 10071;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Tasks leased by reference, for the HTTP pull API: a delivery is known by its
 * reply subject (a JetStream ack is a publish to it), so a signed receipt can
 * carry it and any process on the same NATS can settle it. The answer given
 * for a delivery is kept in a KV bucket (`<prefix>_answers`, created with
 * compare-and-set), not in one process's memory: JetStream acks by stream
 * sequence whoever holds the delivery now, so an answer replayed for an old
 * delivery must be refused before it reaches the server.
 */
export class NatsTaskLeasing implements TaskLeasing {
  readonly #broker: NatsJobBroker;
  readonly #kv: (nc: NatsConnection, make: () => Promise<KV>) => Promise<KV>;

  constructor(broker: NatsJobBroker) {
    this.#broker = broker;
    this.#kv = broker.setups.once();
  }

  #bucket(nc: NatsConnection): Promise<KV> {
    return this.#kv(nc, async () =>
      ensureBucket(
        nc,
        await jetstreamManager(nc),
        this.#broker.names.answersBucket,
        { history: 1, storage: StorageType.File, ttl: answerMemoryMs },
        this.#broker.replicas,
      ),
    );
  }

  /** Makes the answers bucket ahead of the first answer (`rt.admin.provision()`). */
  provision(): Promise<void> {
    return this.#broker.run("task.leasing.provision", async (nc) => void (await this.#bucket(nc)));
  }

  /**
   * True if `reply` is a delivery of this job's tasks, from its queue's tasks
   * stream: by its own consumer, or for a lane job by the queue's lane.
   */
  isDeliveryOf(reply: string, job: JobTasksRef): boolean {
    const lease = leaseInfo(reply);
    return (
      lease?.stream === this.#broker.names.tasksStream(job.queue) &&
      lease.consumer === (job.lane ? laneConsumer : job.id)
    );
  }

  /** The tasks stream a delivery came from, if it is one of this runtime's (any queue's). */
  #tasksStreamOf(reply: string): { stream: string; streamSeq: number } | undefined {
    const lease = leaseInfo(reply);
    if (!lease || queueOfStream(lease.stream, this.#broker.names.tasksStreamPrefix) === undefined)
      return undefined;
    return lease;
  }

  /** The task a delivery (by its reply subject) carries, read from its queue's tasks stream, and its sequence. */
  deliveredTask(reply: string): Promise<{ readonly payload: unknown; readonly seq: number }> {
    const lease = this.#tasksStreamOf(reply);
    if (lease === undefined)
      return Promise.reject(new Error(`deliveredTask: ${JSON.stringify(reply)} is not a task delivery`));
    const { stream, streamSeq: seq } = lease;
    return this.#broker.run("job.tasks.payload", async (nc) => {
      const { jsm } = await this.#broker.handles(nc);
      const stored = await jsm.streams.getMessage(stream, { seq });
      if (!stored) throw new Error(`task at sequence ${seq} is gone`);
      return { payload: decodeTask(stored.string()).payload, seq };
    });
  }

  /** Leases up to `max` of the job's tasks and returns at once with what is ready (maybe none): see `#pull`. */
  fetchTasks(
    queue: string,
    jobId: string,
    max: number,
    pulling?: () => void,
    timeoutMs = 2000,
  ): Promise<LeasedTask[]> {
    return this.#pull(queue, jobId, max, () => jobId, pulling, timeoutMs);
  }

  /** As `fetchTasks`, from the queue's lane: each task's job is the last token of its subject. */
  fetchLane(queue: string, max: number, pulling?: () => void, timeoutMs = 2000): Promise<LeasedTask[]> {
    return this.#pull(queue, laneConsumer, max, jobIdOfSubject, pulling, timeoutMs);
  }

  /**
   * Leases up to `max` tasks of a consumer of the queue's tasks stream and
   * returns at once with what is ready (maybe none). nats.js `fetch()`
   * cannot do this: its `expires` is at least 1 s and it waits that long
   * whenever fewer than `max` tasks are ready. A pull request with `no_wait`
   * is answered at once: the ready messages, then a 404/408 status. Not
   * retried: a retry could lease twice (harmless, the first lease just runs
   * out, but wasteful). A missing consumer does not answer at all;
   * `timeoutMs` bounds that wait. `pulling` is told just before the request
   * is written (see `TaskLeasing.fetchTasks`).
   */
  #pull(
    queue: string,
    consumer: string,
    max: number,
    jobOf: (subject: string) => string,
    pulling: (() => void) | undefined,
    timeoutMs: number,
  ): Promise<LeasedTask[]> {
    return this.#broker.run(
      "job.tasks.fetch",
      async (nc) => {
        // The first lease of a queue here may be the first use of the queue on this client.
        await this.#broker.queueHandles(nc, queue);
        const inbox = createInbox();
        const sub = nc.subscribe(inbox);
        const timer = setTimeout(() => sub.unsubscribe(), timeoutMs);
        const tasks: LeasedTask[] = [];
        try {
          // After the wait for the connection and the queue's set-up: the server delivers later
          // than this (later still if the connection drops now and the request waits in the
          // client's buffer), so a lease timed from here ends before its ack wait does.
          pulling?.();
          nc.publish(
            `$JS.API.CONSUMER.MSG.NEXT.${this.#broker.names.tasksStream(queue)}.${consumer}`,
            JSON.stringify({ batch: max, no_wait: true }),
            { reply: inbox },
          );
          for await (const m of sub) {
            const lease = m.reply ? leaseInfo(m.reply) : undefined;
            // Anything else is a status (404 no messages, 408 request done, 409 …): this pull is over.
            if (!lease) break;
            tasks.push({
              ref: m.reply as string,
              jobId: jobOf(m.subject),
              body: decoder.decode(m.data),
              deliveryCount: lease.deliveryCount,
            });
            if (tasks.length >= max) break;
          }
        } finally {
          clearTimeout(timer);
          sub.unsubscribe();
        }
        return tasks;
      },
      { retry: { attempts: 1, initialDelayMs: 0 } },
    );
  }

  /**
   * Acks, terms, naks or extends leases by their deliveries' reply subjects (a
   * JetStream ack is a publish to it), then flushes: once this resolves the
   * server has them. Not retried: an ack lost is a redelivery, counted once;
   * an ack sent twice could reach the task's next holder.
   */
  settle(settles: readonly LeaseSettle[], notAfter?: number): Promise<void> {
    for (const s of settles) {
      if (this.#tasksStreamOf(s.ref) === undefined) {
        throw new Error(`settle: ${JSON.stringify(s.ref)} is not a task delivery of this runtime`);
      }
    }
    if (settles.some((s) => s.action === "putBack")) return this.#putBack(settles, notAfter);
    return this.#broker.run(
      "job.tasks.settle",
      async (nc) => {
        if (notAfter !== undefined && Date.now() >= notAfter)
          throw new ConnectionUnavailable({
            message: "settle not sent: its deliveries' leases ended meanwhile",
          });
        for (const s of settles) nc.publish(s.ref, leasePayload(s));
        await nc.flush();
      },
      { retry: { attempts: 1, initialDelayMs: 0 } },
    );
  }

  /**
   * The put-backs: each task read from its stream by sequence, its copy
   * stored (its id makes a retried publish land once), then its delivery
   * acked with the rest of `settles`. A copy not stored leaves its delivery
   * to its lease (no ack), and the call rejects once the rest are settled.
   * Stored at once: the HTTP API's own pulls are `no_wait` and leave no
   * request behind (a native worker stopped within the last 3.5 s may:
   * `putBackCopy` in put-back.ts says what that does).
   */
  async #putBack(settles: readonly LeaseSettle[], notAfter: number | undefined): Promise<void> {
    const putBacks = settles.filter((s) => s.action === "putBack");
    // Their leases extended first: one that ran out meanwhile would be counted dead, and run.
    const keeps = putBacks.map((s): LeaseSettle => ({ ref: s.ref, action: "working" }));
    await this.settle(keeps, notAfter);
    const copied = await Promise.allSettled(
      putBacks.map(async ({ ref }) => {
        // Checked by `settle`: a delivery of one of this runtime's tasks streams.
        const lease = this.#tasksStreamOf(ref);
        if (!lease) return undefined;
        const { stream, streamSeq: seq } = lease;
        const stored = await this.#broker.run("job.tasks.putback.read", async (nc) => {
          const { jsm } = await this.#broker.handles(nc);
          return jsm.streams.getMessage(stream, { seq });
        });
        // Gone already (acked, or its job's end removed it): nothing to put back, nothing to ack.
        if (!stored) return undefined;
        await this.#broker.republishTask(stored.subject, stored.data, `back.${seq}`);
        return ref;
      }),
    );
    const failed = copied.find((c): c is PromiseRejectedResult => c.status === "rejected");
    const done = new Set(copied.flatMap((c) => (c.status === "fulfilled" && c.value ? [c.value] : [])));
    const rest = settles.flatMap((s): LeaseSettle[] =>
      s.action !== "putBack" ? [s] : done.has(s.ref) ? [{ ref: s.ref, action: "ack" }] : [],
    );
    // Within the same bound: the keep above extended the leases, but when it reached the server is not known.
    if (rest.length > 0) await this.settle(rest, notAfter);
    if (failed) throw failed.reason;
  }

  /**
   * KV create is the claim: one process wins it. Not retried: a retry after
   * an unknown outcome would find its own claim and call it another's.
   */
  claimAnswer(ref: string, digest: string): Promise<AnswerClaim> {
    const key = answerKey(ref);
    return this.#broker.run(
      "job.tasks.answer.claim",
      async (nc): Promise<AnswerClaim> => {
        const kv = await this.#bucket(nc);
        const pending = encodeAnswer({ status: "pending", digest, at: Date.now() });
        try {
          return { claimed: true, revision: await kv.create(key, pending) };
        } catch (error) {
          if (!(error instanceof JetStreamApiError && error.code === wrongLastSequence)) throw error;
        }
        const entry = await kv.get(key);
        const answer = entry?.operation === "PUT" ? decodeAnswer(entry.value) : undefined;
        // Released (or aged out) in between: claim again; a value we cannot read is nobody's answer.
        if (entry?.operation !== "PUT") return { claimed: true, revision: await kv.create(key, pending) };
        if (!answer) return { claimed: true, revision: await kv.update(key, pending, entry.revision) };
        return { claimed: false, answer };
      },
      { retry: { attempts: 1, initialDelayMs: 0 } },
    );
  }

  answerOf(ref: string): Promise<RecordedAnswer | undefined> {
    return this.#broker.run("job.tasks.answer.get", async (nc) => {
      const entry = await (await this.#bucket(nc)).get(answerKey(ref));
      return entry?.operation === "PUT" ? decodeAnswer(entry.value) : undefined;
    });
  }

  recordAnswer(ref: string, answer: RecordedAnswer, revision: number): Promise<void> {
    return this.#broker.run("job.tasks.answer.record", async (nc) => {
      const kv = await this.#bucket(nc);
      await kv.update(answerKey(ref), encodeAnswer(answer), revision).catch(async (error) => {
        // A retry whose first attempt landed: ours if it says what we wrote.
        const now = await kv.get(answerKey(ref));
        const stored = now?.operation === "PUT" ? decodeAnswer(now.value) : undefined;
        if (stored?.status !== answer.status || stored.digest !== answer.digest) throw error;
      });
    });
  }

  releaseAnswer(ref: string, revision: number): Promise<void> {
    return this.#broker.run("job.tasks.answer.release", async (nc) => {
      const kv = await this.#bucket(nc);
      // Lost the CAS (the answer was rewritten) or gone already: either way not ours to release.
      await kv.delete(answerKey(ref), { previousSeq: revision }).catch(() => undefined);
    });
  }
}

/**
 * A KV key per delivery: reply subjects hold characters keys may not. The
 * prefix is the delivery's consumer (a job id, or `lane` for every lane
 * job's): only for reading the bucket, nothing looks keys up by it.
 */
const answerKey = (ref: string): string =>
  `${leaseInfo(ref)?.consumer ?? "_"}.${createHash("sha256").update(ref).digest("base64url").slice(0, 32)}`;

const encodeAnswer = (a: RecordedAnswer): Uint8Array =>
  encoder.encode(JSON.stringify({ v: 1, s: a.status, h: a.digest, at: a.at }));

const statuses: readonly (AnswerStatus | "pending")[] = ["done", "failed", "dead", "retry", "pending"];

const decodeAnswer = (value: Uint8Array): RecordedAnswer | undefined => {
  try {
    const o = JSON.parse(decoder.decode(value)) as { v?: unknown; s?: unknown; h?: unknown; at?: unknown };
    if (o.v !== 1 || !statuses.includes(o.s as AnswerStatus) || typeof o.h !== "string") return undefined;
    return { status: o.s as AnswerStatus, digest: o.h, at: typeof o.at === "number" ? o.at : 0 };
  } catch {
    // Not JSON: not an answer this version wrote, read as none (as the checks above do).
    return undefined;
  }
};

const leasePayload = (s: LeaseSettle): string => {
  switch (s.action) {
    case "ack":
      return "+ACK";
    case "term":
      // No reason: nats-server 2.9 silently ignores a "+TERM <reason>" (the task comes back after ack_wait).
      return "+TERM";
    case "working":
      return "+WPI";
    case "nak":
      return s.delayMs > 0 ? `-NAK ${JSON.stringify({ delay: nanos(s.delayMs) })}` : "-NAK";
    case "putBack":
      // Sent only once its copy is stored, as an ack (`#putBack`).
      return "+ACK";
  }
};
