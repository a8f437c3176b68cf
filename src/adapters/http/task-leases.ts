import { createHash } from "node:crypto";
import { isFinal, type JobRecord, SubmitPhase } from "../../effects/job-record.ts";
import { decideOutcome, PermanentError } from "../../effects/task-outcome.ts";
import type { Logger } from "../../logger.ts";
import type { LeasedTask, LeaseSettle } from "../nats/task-leasing.ts";
import { ErrorCode, HttpError } from "./http-errors.ts";
import type { ReceiptClaims, ReceiptSigner } from "./receipts.ts";
import type { ResultItem } from "./request-bodies.ts";
import { SettledLeases, type SettledStatus } from "./settled-leases.ts";

/** What the leases need from the broker (NatsJobBroker implements it; unit tests fake it). */
export interface LeasePort {
  getRecord(id: string): Promise<{ record: JobRecord } | undefined>;
  listRecords(): Promise<JobRecord[]>;
  fetchTasks(jobId: string, max: number): Promise<LeasedTask[]>;
  settleLeases(settles: readonly LeaseSettle[]): Promise<void>;
  publishResults(jobId: string, body: string, msgId: string): Promise<void>;
  /** True if `reply` is a delivery of this job's tasks. */
  isDeliveryOf(reply: string, jobId: string): boolean;
  /**
   * Keeps a task that died on its last delivery (payload read from the task
   * store, last error) as a dead letter, so it can be redriven like one that
   * died at a native worker.
   */
  storeDeadLetter(letter: {
    jobId: string;
    index: number;
    reply: string;
    error: string;
    deliveries: number;
  }): Promise<void>;
}

export interface ReservedTask {
  readonly id: string;
  readonly jobId: string;
  readonly index: number;
  readonly attempt: number;
  readonly payload: unknown;
  readonly receipt: string;
  /** The lease ends this many ms after the answer is sent (heartbeat before). */
  readonly leaseMs: number;
}

export type ItemStatus = SettledStatus | "expired";

export interface ItemOutcome {
  readonly id: string;
  readonly status: ItemStatus;
  /** This receipt was answered before: nothing was done again; `status` is the first answer's. */
  readonly duplicate?: true;
  /** For `retry`: when the task is offered again. */
  readonly retryInMs?: number;
  /** The last error of a task that died here (kept as its dead letter). */
  readonly deadError?: string;
}

export type HeartbeatOutcome =
  | { readonly id: string; readonly status: "extended"; readonly receipt: string; readonly leaseMs: number }
  | { readonly id: string; readonly status: "expired" | "settled" };

export interface TaskLeasesOptions {
  readonly signer: ReceiptSigner;
  readonly log: Logger;
  readonly now?: () => number;
  /** How long `/queues/:queue/tasks` reuses the list of jobs (default 1000 ms). */
  readonly jobListTtlMs?: number;
}

/** Same limit as the native worker: one result must leave room in a results message. */
const maxResultBytes = 256 * 1024 - 64;
const maxResultsMessageBytes = 256 * 1024;
/** A duplicate of a receipt is recognised this long after its lease ended (the JetStream duplicate window). */
const rememberAfterLeaseMs = 120_000;
const decoder = new TextDecoder();

/**
 * Our lease ends a little before the server's: we start counting when the
 * pull request leaves (before the server delivers), and take off a margin
 * for the time an ack needs to arrive. A receipt is refused once it passes,
 * so its holder can never ack the delivery of the task's next holder.
 */
const leaseMargin = (ackWaitMs: number) => Math.min(2000, Math.ceil(ackWaitMs / 10));

const isActive = (record: JobRecord) =>
  record.phase === SubmitPhase.committed && (record.status === "running" || record.status === "stalled");

/**
 * The lease contract of native workers, held by HTTP workers through signed
 * receipts: reserve tasks, store their results (one results message per
 * request; its PubAck before any ack), then ack or term; a non-permanent
 * error naks with the job's backoff unless it was the last delivery (then a
 * dead result and term) — the same `decideOutcome` as native workers.
 */
export class TaskLeases {
  readonly #port: LeasePort;
  readonly #signer: ReceiptSigner;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #settled = new SettledLeases();
  readonly #jobListTtlMs: number;
  #jobList: { at: number; records: Promise<JobRecord[]> } | undefined;
  readonly #cursors = new Map<string, number>();

  constructor(port: LeasePort, options: TaskLeasesOptions) {
    this.#port = port;
    this.#signer = options.signer;
    this.#log = options.log;
    this.#now = options.now ?? Date.now;
    this.#jobListTtlMs = options.jobListTtlMs ?? 1000;
  }

  /** Up to `max` tasks of the job, at once; none if nothing is ready. 404 unknown job, 410 finished. */
  async reserve(jobId: string, max: number, workerId: string, signal?: AbortSignal): Promise<ReservedTask[]> {
    const record = await this.#openRecord(jobId);
    return isActive(record) ? this.#lease(record, max, workerId, signal) : [];
  }

  /** Up to `max` tasks from the queue's active jobs, starting with a different job each call (round robin). */
  async reserveFromQueue(queue: string, max: number, workerId: string, signal?: AbortSignal) {
    const ofQueue = (records: JobRecord[]) => records.filter((r) => r.queue === queue && isActive(r));
    let candidates = ofQueue(await this.#jobsList(this.#jobListTtlMs));
    // Nothing known for this queue: look again sooner, a job may have just been submitted.
    if (candidates.length === 0)
      candidates = ofQueue(await this.#jobsList(Math.min(100, this.#jobListTtlMs)));
    const tasks: ReservedTask[] = [];
    if (candidates.length === 0) return tasks;
    const start = (this.#cursors.get(queue) ?? 0) % candidates.length;
    this.#cursors.set(queue, start + 1);
    for (let k = 0; k < candidates.length && tasks.length < max && !signal?.aborted; k++) {
      // The list may be a second old: re-read the record, a finished job's consumer is gone.
      const fresh = await this.#port.getRecord(candidates[(start + k) % candidates.length]!.id);
      if (!fresh || !isActive(fresh.record)) continue;
      tasks.push(...(await this.#lease(fresh.record, max - tasks.length, workerId, signal)));
    }
    return tasks;
  }

  /** Stores the results, then settles the leases; per item what became of it. */
  async submitResults(jobId: string, items: readonly ResultItem[], workerId: string): Promise<ItemOutcome[]> {
    const claims = items.map((item, n) => this.#verify(item.receipt, jobId, `results[${n}].receipt`));
    const record = await this.#openRecord(jobId);
    const now = this.#now();
    const outcomes: Promise<ItemOutcome>[] = [];
    const entries: {
      entry: string;
      settle: LeaseSettle;
      claim: Fresh;
      outcome: ItemOutcome;
      dead?: { index: number; error: string; deliveries: number };
    }[] = [];
    const naks: { settle: LeaseSettle; claim: Fresh; outcome: ItemOutcome }[] = [];
    for (const [n, item] of items.entries()) {
      const c = claims[n]!;
      const id = `${jobId}.${c.i}`;
      const claim =
        c.x > now || this.#settled.has(c.r)
          ? this.#settled.claim(c.r, c.x + rememberAfterLeaseMs, now)
          : undefined;
      if (!claim) {
        outcomes.push(Promise.resolve({ id, status: "expired" }));
        continue;
      }
      if (!claim.fresh) {
        outcomes.push(claim.status.then((status) => duplicateOf(id, status)));
        continue;
      }
      const decided = decide(item, c, record);
      const outcome: ItemOutcome = {
        id,
        status: decided.status,
        ...(decided.retryInMs === undefined ? {} : { retryInMs: decided.retryInMs }),
      };
      if (decided.entry === undefined) naks.push({ settle: decided.settle, claim, outcome });
      else
        entries.push({
          entry: decided.entry,
          settle: decided.settle,
          claim,
          outcome,
          ...(decided.deadError === undefined
            ? {}
            : { dead: { index: c.i, error: decided.deadError, deliveries: c.d } }),
        });
      outcomes.push(Promise.resolve(outcome));
    }
    const failures: unknown[] = [];
    // A dead letter before its dead result: once the task is termed its payload is gone.
    for (const e of entries.filter((x) => x.dead !== undefined)) {
      try {
        await this.#port.storeDeadLetter({ jobId, reply: e.settle.reply, ...e.dead! });
      } catch (error) {
        // Not answered: its lease runs out and the MAX_DELIVERIES advisory path takes it.
        failures.push(error);
        e.claim.release();
        entries.splice(entries.indexOf(e), 1);
      }
    }
    // Results first, each message's PubAck before its tasks are acked: a task is never acked without its result.
    await Promise.all(
      chunk(entries, (e) => e.entry.length + 1, maxResultsMessageBytes).map(async (part) => {
        const body = `[${part.map((e) => e.entry).join(",")}]`;
        try {
          await this.#port.publishResults(
            jobId,
            body,
            messageId(
              jobId,
              part.map((e) => e.settle.reply),
            ),
          );
          await this.#port.settleLeases(part.map((e) => e.settle));
          for (const e of part) e.claim.settle(e.outcome.status as SettledStatus);
        } catch (error) {
          failures.push(error);
          for (const e of part) e.claim.release();
        }
      }),
    );
    if (naks.length > 0) {
      try {
        await this.#port.settleLeases(naks.map((e) => e.settle));
        for (const e of naks) e.claim.settle("retry");
      } catch (error) {
        failures.push(error);
        for (const e of naks) e.claim.release();
      }
    }
    const answered = await Promise.all(outcomes);
    this.#log.info(
      {
        jobId,
        workerId,
        ...countStatuses(answered),
        tasks: answered.map((o) => o.id.slice(jobId.length + 1)),
      },
      "results received",
    );
    if (failures.length > 0) throw failures[0];
    return answered;
  }

  /** Extends the leases of the receipts; each still open one gets a fresh receipt. */
  async heartbeat(jobId: string, receipts: readonly string[], workerId: string): Promise<HeartbeatOutcome[]> {
    const claims = receipts.map((r, n) => this.#verify(r, jobId, `receipts[${n}]`));
    const record = await this.#openRecord(jobId);
    const now = this.#now();
    const open = claims.filter((c) => c.x > now && !this.#settled.has(c.r));
    const sentAt = this.#now();
    if (open.length > 0) await this.#port.settleLeases(open.map((c) => ({ reply: c.r, action: "working" })));
    const x = sentAt + record.settings.ackWaitMs - leaseMargin(record.settings.ackWaitMs);
    const leaseMs = x - this.#now();
    const outcomes = claims.map((c): HeartbeatOutcome => {
      const id = `${jobId}.${c.i}`;
      if (this.#settled.has(c.r)) return { id, status: "settled" };
      if (c.x <= now) return { id, status: "expired" };
      return { id, status: "extended", receipt: this.#signer.sign({ ...c, x }), leaseMs };
    });
    this.#log.debug({ jobId, workerId, extended: open.length, of: claims.length }, "leases extended");
    return outcomes;
  }

  /** The job's record if it may still take answers: 404 unknown, 410 finished. */
  async #openRecord(jobId: string): Promise<JobRecord> {
    const found = await this.#port.getRecord(jobId);
    if (!found) throw new HttpError(404, ErrorCode.jobNotFound, `no job ${jobId}`);
    const { record } = found;
    if (isFinal(record.status) || record.phase === SubmitPhase.rolledBack) {
      throw new HttpError(
        410,
        ErrorCode.jobFinished,
        `job ${jobId} is ${record.status}; it takes no more work`,
        {
          status: record.status,
        },
      );
    }
    return record;
  }

  #verify(receipt: string, jobId: string, field: string): ReceiptClaims {
    const claims = this.#signer.verify(receipt);
    if (!claims || !this.#port.isDeliveryOf(claims.r, claims.j)) {
      throw new HttpError(400, ErrorCode.invalidReceipt, `${field}: not a receipt issued by this service`, {
        field,
      });
    }
    if (claims.j !== jobId) {
      throw new HttpError(400, ErrorCode.receiptWrongJob, `${field}: the receipt belongs to another job`, {
        field,
      });
    }
    return claims;
  }

  async #lease(
    record: JobRecord,
    max: number,
    workerId: string,
    signal?: AbortSignal,
  ): Promise<ReservedTask[]> {
    const startedAt = this.#now();
    const leased = await this.#port.fetchTasks(record.id, max);
    const expires = startedAt + record.settings.ackWaitMs - leaseMargin(record.settings.ackWaitMs);
    const tasks: ReservedTask[] = [];
    const replies: string[] = [];
    const unreadable: LeaseSettle[] = [];
    const leaseMs = expires - this.#now();
    for (const t of leased) {
      const body = parseTask(t.data);
      if (!body) {
        unreadable.push({ reply: t.reply, action: "term" });
        continue;
      }
      replies.push(t.reply);
      tasks.push({
        id: `${record.id}.${body.i}`,
        jobId: record.id,
        index: body.i,
        attempt: t.deliveryCount,
        payload: body.p,
        receipt: this.#signer.sign({
          v: 1,
          j: record.id,
          i: body.i,
          r: t.reply,
          d: t.deliveryCount,
          x: expires,
        }),
        leaseMs,
      });
    }
    if (unreadable.length > 0) {
      this.#log.error({ jobId: record.id, count: unreadable.length }, "unreadable task messages terminated");
      await this.#port.settleLeases(unreadable).catch(() => undefined);
    }
    if (signal?.aborted && tasks.length > 0) {
      // The worker went away before it got them: hand them back now rather than after the lease.
      await this.#port
        .settleLeases(replies.map((reply) => ({ reply, action: "nak", delayMs: 0 })))
        .catch(() => undefined);
      return [];
    }
    if (tasks.length > 0) {
      this.#log.info(
        {
          jobId: record.id,
          queue: record.queue,
          workerId,
          tasks: tasks.map((t) => t.index),
          attempts: tasks.map((t) => t.attempt),
        },
        "tasks reserved",
      );
    }
    return tasks;
  }

  /** Active jobs, from a list at most `maxAgeMs` old (one KV scan shared by concurrent callers). */
  #jobsList(maxAgeMs: number): Promise<JobRecord[]> {
    const now = this.#now();
    if (!this.#jobList || now - this.#jobList.at > maxAgeMs) {
      const records = this.#port
        .listRecords()
        .then((all) =>
          all.filter(isActive).sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1)),
        );
      records.catch(() => {
        if (this.#jobList?.records === records) this.#jobList = undefined;
      });
      this.#jobList = { at: now, records };
    }
    return this.#jobList.records;
  }
}

type Fresh = Extract<ReturnType<SettledLeases["claim"]>, { fresh: true }>;

interface Decision {
  readonly status: SettledStatus;
  /** The results entry to store; none for a retry. */
  readonly entry?: string;
  readonly settle: LeaseSettle;
  readonly retryInMs?: number;
  /** The last error of a task that died here (kept as its dead letter). */
  readonly deadError?: string;
}

/** The native worker's rules (task-outcome.ts) applied to one posted answer. */
const decide = (item: ResultItem, c: ReceiptClaims, record: JobRecord): Decision => {
  let error: Error | undefined;
  if (item.ok) {
    const json = item.json;
    if (json.length <= maxResultBytes) {
      return {
        status: "done",
        entry: `{"i":${c.i},"ok":true,"r":${json}}`,
        settle: { reply: c.r, action: "ack" },
      };
    }
    error = new PermanentError(`result of task ${c.i} is too large (${json.length} bytes)`);
  } else {
    error = item.permanent ? new PermanentError(item.message) : new Error(item.message);
  }
  const outcome = decideOutcome(error, {
    attempt: c.d,
    maxDeliver: record.settings.maxDeliver,
    backoffMs: record.settings.backoffMs,
  });
  switch (outcome.kind) {
    case "nak":
      return {
        status: "retry",
        settle: { reply: c.r, action: "nak", delayMs: outcome.delayMs },
        retryInMs: outcome.delayMs,
      };
    case "dead":
      return {
        status: "dead",
        entry: `{"i":${c.i},"ok":false,"e":${JSON.stringify(outcome.error)},"dead":true}`,
        settle: { reply: c.r, action: "term" },
        deadError: outcome.error,
      };
    default:
      // "term" (an error is never "ack"): counted failed, never redelivered.
      return {
        status: "failed",
        entry: `{"i":${c.i},"ok":false,"e":${JSON.stringify(outcome.kind === "term" ? outcome.error : error.message)}}`,
        settle: { reply: c.r, action: "term" },
      };
  }
};

const duplicateOf = (id: string, status: SettledStatus | undefined): ItemOutcome => {
  if (status === undefined) {
    // The first attempt failed to store it and released the lease: this one must be retried.
    throw new HttpError(
      503,
      ErrorCode.unavailable,
      "a concurrent request for the same receipt failed; try again",
    );
  }
  return { id, status, duplicate: true };
};

const countStatuses = (outcomes: readonly ItemOutcome[]) => {
  const counts = { done: 0, failed: 0, dead: 0, retry: 0, expired: 0, duplicate: 0 };
  for (const o of outcomes) {
    if (o.duplicate) counts.duplicate++;
    else counts[o.status]++;
  }
  return counts;
};

/**
 * The same deliveries always give the same message id, so a POST retried
 * after an unknown outcome is stored once (JetStream's duplicate window).
 */
const messageId = (jobId: string, replies: readonly string[]): string =>
  `${jobId}.http.${createHash("sha256")
    .update([...replies].sort().join("\n"))
    .digest("base64url")
    .slice(0, 32)}`;

/** Splits items into runs whose sizes add up to at most `max` (an item larger than `max` goes alone). */
const chunk = <T>(items: readonly T[], size: (item: T) => number, max: number): T[][] => {
  const parts: T[][] = [];
  let current: T[] = [];
  let bytes = 2;
  for (const item of items) {
    const s = size(item);
    if (current.length > 0 && bytes + s > max) {
      parts.push(current);
      current = [];
      bytes = 2;
    }
    current.push(item);
    bytes += s;
  }
  if (current.length > 0) parts.push(current);
  return parts;
};

const parseTask = (data: Uint8Array): { i: number; p: unknown } | undefined => {
  try {
    const body = JSON.parse(decoder.decode(data)) as { i?: unknown; p?: unknown };
    return Number.isSafeInteger(body.i) && (body.i as number) >= 0
      ? { i: body.i as number, p: body.p }
      : undefined;
  } catch {
    return undefined;
  }
};
