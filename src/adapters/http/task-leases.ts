import { createHash } from "node:crypto";
import { isFinal, type JobRecord, SubmitPhase } from "../../kernel/job-record.ts";
import type { Logger } from "../../kernel/logger.ts";
import { decideOutcome, PermanentError } from "../../kernel/task-outcome.ts";
import type { AnswerStatus, LeaseSettle, RecordedAnswer, TaskLeasing } from "../broker.ts";
import { ErrorCode, HttpError } from "./http-errors.ts";
import { LeaseBook } from "./lease-book.ts";
import type { ReceiptClaims, ReceiptSigner } from "./receipts.ts";
import type { ResultItem } from "./request-bodies.ts";
import type { TokenScope } from "./token-scopes.ts";

/** What the leases need from the broker (the port's task leasing, records and results; unit tests fake it). */
export interface LeasePort
  extends Pick<
    TaskLeasing,
    "isDeliveryOf" | "fetchTasks" | "settle" | "claimAnswer" | "answerOf" | "recordAnswer" | "releaseAnswer"
  > {
  getRecord(id: string): Promise<{ record: JobRecord } | undefined>;
  listRecords(): Promise<JobRecord[]>;
  publishResults(queue: string, jobId: string, body: string, msgId: string): Promise<void>;
  /**
   * Keeps a task that died on its last delivery (payload read from the task
   * store, last error) as a dead letter, so it can be redriven like one that
   * died at a native worker.
   */
  storeDeadLetter(letter: {
    queue: string;
    jobId: string;
    index: number;
    ref: string;
    error: string;
    deliveries: number;
  }): Promise<void>;
}

/** Who calls: the token's identity and scope. */
export type Caller = Pick<TokenScope, "identity" | "allows">;

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

export type ItemStatus = AnswerStatus | "expired" | "pending" | "conflict";

export interface ItemOutcome {
  readonly id: string;
  readonly status: ItemStatus;
  /** This receipt was answered before with the same answer: nothing was done again; `status` is the first answer's. */
  readonly duplicate?: true;
  /** For `conflict`: the delivery was answered before, differently; what the first answer did. */
  readonly answered?: AnswerStatus | "pending";
  /** For `retry`: when the task is offered again. */
  readonly retryInMs?: number;
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
  /** Open leases one token may hold through this instance (default 100). */
  readonly maxLeasesPerToken?: number;
}

/** Same limit as the native worker: one result must leave room in a results message. */
const maxResultBytes = 256 * 1024 - 64;
const maxResultsMessageBytes = 256 * 1024;
/**
 * Longest lease one receipt carries: below the time the broker keeps a
 * delivery's answer (24 h), so an answered receipt is refused for as long as
 * it is valid. A longer ack wait is held by heartbeats, each renewing it.
 */
const maxReceiptLeaseMs = 20 * 3600_000;

/**
 * Our lease ends a little before the server's: we start counting when the
 * pull request leaves (before the server delivers), and take off a margin
 * for the time an ack needs to arrive. A receipt is refused once it passes,
 * so its holder can never ack the delivery of the task's next holder.
 */
const leaseMargin = (ackWaitMs: number) => Math.min(2000, Math.ceil(ackWaitMs / 10));
const leaseEnd = (startedAt: number, ackWaitMs: number) =>
  startedAt + Math.min(ackWaitMs - leaseMargin(ackWaitMs), maxReceiptLeaseMs);

const isActive = (record: JobRecord) =>
  record.phase === SubmitPhase.committed && (record.status === "running" || record.status === "stalled");

/** A reserved task with what this instance keeps of its lease. */
type Leased = ReservedTask & { readonly ref: string; readonly until: number };

/** One answer being settled by this process; concurrent requests for the same delivery wait for it. */
type InFlight = Promise<RecordedAnswer | undefined>;

/**
 * The lease contract of native workers, held by HTTP workers through signed
 * receipts: reserve tasks, store their results (one results message per
 * request; its PubAck before any ack), then ack or term; a non-permanent
 * error naks with the job's backoff unless it was the last delivery (then a
 * dead result and term) — the same `decideOutcome` as native workers.
 *
 * Each delivery is answered once, by the broker's record of it
 * (`claimAnswer`), not by this process's memory: a receipt replayed after a
 * restart, or on another instance sharing the secret, finds the first answer
 * and does nothing. The same answer again is a `duplicate` (a retried POST);
 * a different one is a `conflict`.
 */
export class TaskLeases {
  readonly #port: LeasePort;
  readonly #signer: ReceiptSigner;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #inFlight = new Map<string, InFlight>();
  readonly #book: LeaseBook;
  readonly #jobListTtlMs: number;
  #jobList: { at: number; records: Promise<JobRecord[]> } | undefined;
  readonly #cursors = new Map<string, number>();

  constructor(port: LeasePort, options: TaskLeasesOptions) {
    this.#port = port;
    this.#signer = options.signer;
    this.#log = options.log;
    this.#now = options.now ?? Date.now;
    this.#jobListTtlMs = options.jobListTtlMs ?? 1000;
    this.#book = new LeaseBook(options.maxLeasesPerToken ?? 100);
  }

  /** Up to `max` tasks of the job, at once; none if nothing is ready. 404 unknown job (or not the caller's), 410 finished. */
  async reserve(jobId: string, max: number, caller: Caller, signal?: AbortSignal): Promise<ReservedTask[]> {
    const record = await this.#openRecord(jobId, caller);
    if (!isActive(record)) return [];
    return this.#withSlots(caller, max, (slots) => this.#lease(record, slots, caller, signal));
  }

  /** Up to `max` tasks from the queue's active jobs, starting with a different job each call (round robin). */
  async reserveFromQueue(queue: string, max: number, caller: Caller, signal?: AbortSignal) {
    const ofQueue = (records: JobRecord[]) => records.filter((r) => r.queue === queue && isActive(r));
    let candidates = ofQueue(await this.#jobsList(this.#jobListTtlMs));
    // Nothing known for this queue: look again sooner, a job may have just been submitted.
    if (candidates.length === 0)
      candidates = ofQueue(await this.#jobsList(Math.min(100, this.#jobListTtlMs)));
    if (candidates.length === 0) return [];
    return this.#withSlots(caller, max, async (slots) => {
      const tasks: Leased[] = [];
      const start = (this.#cursors.get(queue) ?? 0) % candidates.length;
      this.#cursors.set(queue, start + 1);
      for (let k = 0; k < candidates.length && tasks.length < slots && !signal?.aborted; k++) {
        // The list may be a second old: re-read the record, a finished job's consumer is gone.
        const fresh = await this.#port.getRecord(candidates[(start + k) % candidates.length]!.id);
        if (!fresh || !isActive(fresh.record)) continue;
        tasks.push(...(await this.#lease(fresh.record, slots - tasks.length, caller, signal)));
      }
      return tasks;
    });
  }

  /** Stores the results, then settles the leases; per item what became of it. */
  async submitResults(jobId: string, items: readonly ResultItem[], caller: Caller): Promise<ItemOutcome[]> {
    const field = (n: number) => `results[${n}].receipt`;
    const claims = items.map((item, n) => this.#verify(item.receipt, jobId, field(n), caller));
    const record = await this.#openRecord(jobId, caller);
    this.#assertDeliveries(record, claims, field);
    const now = this.#now();
    const outcomes: Promise<ItemOutcome>[] = [];
    const mine: Answering[] = [];
    for (const [n, item] of items.entries()) {
      const c = claims[n]!;
      const id = `${jobId}.${c.i}`;
      const digest = answerDigest(item);
      const running = this.#inFlight.get(c.r);
      if (running) {
        // Answered by a request of this process right now (or earlier in this one): its outcome decides.
        outcomes.push(running.then((first) => repeated(id, digest, first)));
        continue;
      }
      if (c.x <= now) {
        outcomes.push(Promise.resolve({ id, status: "expired" }));
        continue;
      }
      let finish!: (answer: RecordedAnswer | undefined) => void;
      const done: InFlight = new Promise((resolve) => {
        finish = resolve;
      });
      this.#inFlight.set(c.r, done);
      const answering: Answering = {
        c,
        id,
        digest,
        item,
        revision: 0,
        finish: (answer) => {
          if (this.#inFlight.get(c.r) === done) this.#inFlight.delete(c.r);
          finish(answer);
        },
        // A failed settle is thrown for the whole request (below); its outcome is never shown.
        outcome: done.then((answer) =>
          answering.failed ? { id, status: "expired" } : (answering.result ?? repeated(id, digest, answer)),
        ),
      };
      mine.push(answering);
      outcomes.push(answering.outcome);
    }
    const failures: unknown[] = [];
    // The broker's record of each delivery decides who answers it: one claim per delivery, ever.
    const claimed: Answering[] = [];
    await Promise.all(
      mine.map(async (a) => {
        try {
          const claim = await this.#port.claimAnswer(a.c.r, a.digest);
          if (claim.claimed) {
            a.revision = claim.revision;
            claimed.push(a);
          } else {
            this.#book.release(caller.identity, a.c.r);
            a.finish(claim.answer);
          }
        } catch (error) {
          failures.push(error);
          a.failed = true;
          a.finish(undefined);
        }
      }),
    );
    const entries: { entry: string; decided: Decision; a: Answering }[] = [];
    const naks: { decided: Decision; a: Answering }[] = [];
    for (const a of claimed) {
      const decided = decide(a.item, a.c, record);
      a.result = {
        id: a.id,
        status: decided.status,
        ...(decided.retryInMs === undefined ? {} : { retryInMs: decided.retryInMs }),
      };
      if (decided.entry === undefined) naks.push({ decided, a });
      else entries.push({ entry: decided.entry, decided, a });
    }
    const settled = async (part: readonly { decided: Decision; a: Answering }[]) => {
      await Promise.all(
        part.map(({ decided, a }) =>
          this.#port
            .recordAnswer(a.c.r, { status: decided.status, digest: a.digest, at: this.#now() }, a.revision)
            .catch((error) => this.#log.warn({ err: error, jobId }, "answer settled but not recorded")),
        ),
      );
      for (const { decided, a } of part) {
        this.#book.release(caller.identity, a.c.r);
        a.finish({ status: decided.status, digest: a.digest, at: this.#now() });
      }
    };
    const unsettled = (part: readonly { a: Answering }[], error: unknown) => {
      failures.push(error);
      for (const { a } of part) {
        a.failed = true;
        this.#port.releaseAnswer(a.c.r, a.revision).catch(() => undefined);
        a.finish(undefined);
      }
    };
    // A dead letter before its dead result: once the task is termed its payload is gone.
    for (const e of entries.filter((x) => x.decided.deadError !== undefined)) {
      try {
        await this.#port.storeDeadLetter({
          queue: record.queue,
          jobId,
          ref: e.a.c.r,
          index: e.a.c.i,
          error: e.decided.deadError!,
          deliveries: e.a.c.d,
        });
      } catch (error) {
        // Not answered: its lease runs out and the MAX_DELIVERIES advisory path takes it.
        unsettled([e], error);
        entries.splice(entries.indexOf(e), 1);
      }
    }
    // Results first, each message's PubAck before its tasks are acked: a task is never acked without its result.
    await Promise.all(
      chunk(entries, (e) => e.entry.length + 1, maxResultsMessageBytes).map(async (part) => {
        const body = `[${part.map((e) => e.entry).join(",")}]`;
        try {
          await this.#port.publishResults(
            record.queue,
            jobId,
            body,
            messageId(
              jobId,
              part.map((e) => e.a.c.r),
            ),
          );
          await this.#port.settle(part.map((e) => e.decided.settle));
        } catch (error) {
          unsettled(part, error);
          return;
        }
        await settled(part);
      }),
    );
    if (naks.length > 0) {
      try {
        await this.#port.settle(naks.map((e) => e.decided.settle));
        await settled(naks);
      } catch (error) {
        unsettled(naks, error);
      }
    }
    const answered = await Promise.all(outcomes);
    this.#log.info(
      {
        jobId,
        workerId: caller.identity,
        ...countStatuses(answered),
        tasks: answered.map((o) => o.id.slice(jobId.length + 1)),
      },
      "results received",
    );
    if (failures.length > 0) throw failures[0];
    return answered;
  }

  /** Extends the leases of the receipts; each still open one gets a fresh receipt. */
  async heartbeat(jobId: string, receipts: readonly string[], caller: Caller): Promise<HeartbeatOutcome[]> {
    const field = (n: number) => `receipts[${n}]`;
    const claims = receipts.map((r, n) => this.#verify(r, jobId, field(n), caller));
    const record = await this.#openRecord(jobId, caller);
    this.#assertDeliveries(record, claims, field);
    const now = this.#now();
    // Answered already (here or on another instance): nothing to extend.
    const answered = await Promise.all(
      claims.map(
        async (c) => this.#inFlight.has(c.r) || (c.x > now && (await this.#port.answerOf(c.r)) !== undefined),
      ),
    );
    const open = claims.filter((c, n) => c.x > now && !answered[n]);
    const sentAt = this.#now();
    if (open.length > 0) await this.#port.settle(open.map((c) => ({ ref: c.r, action: "working" })));
    const x = leaseEnd(sentAt, record.settings.ackWaitMs);
    const leaseMs = x - this.#now();
    const outcomes = claims.map((c, n): HeartbeatOutcome => {
      const id = `${jobId}.${c.i}`;
      if (answered[n]) return { id, status: "settled" };
      if (c.x <= now) return { id, status: "expired" };
      this.#book.extend(caller.identity, c.r, x);
      return { id, status: "extended", receipt: this.#signer.sign({ ...c, x }), leaseMs };
    });
    this.#log.debug(
      { jobId, workerId: caller.identity, extended: open.length, of: claims.length },
      "leases extended",
    );
    return outcomes;
  }

  /** The job's record if it may still take answers: 404 unknown (or of a queue the caller may not use), 410 finished. */
  async #openRecord(jobId: string, caller: Caller): Promise<JobRecord> {
    const found = await this.#port.getRecord(jobId);
    if (!found || !caller.allows(found.record.queue))
      throw new HttpError(404, ErrorCode.jobNotFound, `no job ${jobId}`);
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

  #verify(receipt: string, jobId: string, field: string, caller: Caller): ReceiptClaims {
    const claims = this.#signer.verify(receipt);
    if (!claims) throw invalidReceipt(field);
    if (claims.j !== jobId) {
      throw new HttpError(400, ErrorCode.receiptWrongJob, `${field}: the receipt belongs to another job`, {
        field,
      });
    }
    if (claims.w !== caller.identity) {
      throw new HttpError(
        403,
        ErrorCode.receiptNotYours,
        `${field}: the receipt was leased by another token; only that token may answer it`,
        { field },
      );
    }
    return claims;
  }

  /**
   * Each receipt names a delivery of the job's tasks, on its queue's tasks
   * (checked once the record says which queue: the receipt does not carry it).
   */
  #assertDeliveries(record: JobRecord, claims: readonly ReceiptClaims[], field: (n: number) => string): void {
    for (const [n, c] of claims.entries()) {
      if (!this.#port.isDeliveryOf(c.r, record.queue, c.j)) throw invalidReceipt(field(n));
    }
  }

  /** Runs `lease` with the slots the caller has left under its cap; 429 when it has none. */
  async #withSlots(
    caller: Caller,
    max: number,
    lease: (slots: number) => Promise<Leased[]>,
  ): Promise<Leased[]> {
    let slots = this.#book.take(caller.identity, max, this.#now());
    if (slots < max) {
      // Near the cap: some of its leases may have been answered through another instance.
      this.#book.fill(caller.identity, slots, []);
      await this.#book.refresh(
        caller.identity,
        async (ref) => (await this.#port.answerOf(ref)) !== undefined,
        this.#now(),
      );
      slots = this.#book.take(caller.identity, max, this.#now());
    }
    if (slots === 0) {
      throw new HttpError(
        429,
        ErrorCode.tooManyLeases,
        `this token holds ${this.#book.max} open leases; answer some (or let them expire) first`,
        { max_leases: this.#book.max },
      );
    }
    let tasks: Leased[] = [];
    try {
      tasks = await lease(slots);
      return tasks;
    } finally {
      this.#book.fill(
        caller.identity,
        slots,
        tasks.map((t) => ({ ref: t.ref, until: t.until })),
      );
    }
  }

  async #lease(record: JobRecord, max: number, caller: Caller, signal?: AbortSignal): Promise<Leased[]> {
    const startedAt = this.#now();
    const leased = await this.#port.fetchTasks(record.queue, record.id, max);
    const expires = leaseEnd(startedAt, record.settings.ackWaitMs);
    const tasks: Leased[] = [];
    const unreadable: LeaseSettle[] = [];
    const leaseMs = expires - this.#now();
    for (const t of leased) {
      const body = parseTask(t.body);
      if (!body) {
        unreadable.push({ ref: t.ref, action: "term" });
        continue;
      }
      tasks.push({
        id: `${record.id}.${body.i}`,
        jobId: record.id,
        index: body.i,
        attempt: t.deliveryCount,
        payload: body.p,
        receipt: this.#signer.sign({
          v: 2,
          j: record.id,
          i: body.i,
          r: t.ref,
          w: caller.identity,
          d: t.deliveryCount,
          x: expires,
        }),
        leaseMs,
        ref: t.ref,
        until: expires,
      });
    }
    if (unreadable.length > 0) {
      this.#log.error({ jobId: record.id, count: unreadable.length }, "unreadable task messages terminated");
      await this.#port.settle(unreadable).catch(() => undefined);
    }
    if (signal?.aborted && tasks.length > 0) {
      // The worker went away before it got them: hand them back now rather than after the lease.
      await this.#port
        .settle(tasks.map((t) => ({ ref: t.ref, action: "nak", delayMs: 0 })))
        .catch(() => undefined);
      return [];
    }
    if (tasks.length > 0) {
      this.#log.info(
        {
          jobId: record.id,
          queue: record.queue,
          workerId: caller.identity,
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

/** One item this request answers (it holds the delivery's in-flight slot). */
interface Answering {
  readonly c: ReceiptClaims;
  readonly id: string;
  readonly digest: string;
  readonly item: ResultItem;
  revision: number;
  /** Set once this request settled the delivery itself. */
  result?: ItemOutcome;
  /** Claiming or settling it failed: the request fails (and the holder may try again). */
  failed?: boolean;
  finish(answer: RecordedAnswer | undefined): void;
  readonly outcome: Promise<ItemOutcome>;
}

/** A delivery answered before: the same answer is a duplicate, another one a conflict. */
const repeated = (id: string, digest: string, first: RecordedAnswer | undefined): ItemOutcome => {
  if (first === undefined) {
    // The first attempt failed to store it and released the lease: this one must be retried.
    throw new HttpError(
      503,
      ErrorCode.unavailable,
      "a concurrent request for the same receipt failed; try again",
    );
  }
  if (first.digest === digest) return { id, status: first.status, duplicate: true };
  return { id, status: "conflict", answered: first.status };
};

/** What was answered, so a retried POST (same answer) can be told from a different answer. */
const answerDigest = (item: ResultItem): string =>
  createHash("sha256")
    .update(item.ok ? `ok\n${item.json}` : `error\n${item.permanent}\n${item.message}`)
    .digest("base64url")
    .slice(0, 22);

interface Decision {
  readonly status: AnswerStatus;
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
        settle: { ref: c.r, action: "ack" },
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
        settle: { ref: c.r, action: "nak", delayMs: outcome.delayMs },
        retryInMs: outcome.delayMs,
      };
    case "dead":
      return {
        status: "dead",
        entry: `{"i":${c.i},"ok":false,"e":${JSON.stringify(outcome.error)},"dead":true}`,
        settle: { ref: c.r, action: "term" },
        deadError: outcome.error,
      };
    default:
      // "term" (an error is never "ack"): counted failed, never redelivered.
      return {
        status: "failed",
        entry: `{"i":${c.i},"ok":false,"e":${JSON.stringify(outcome.kind === "term" ? outcome.error : error.message)}}`,
        settle: { ref: c.r, action: "term" },
      };
  }
};

const countStatuses = (outcomes: readonly ItemOutcome[]) => {
  const counts = { done: 0, failed: 0, dead: 0, retry: 0, expired: 0, pending: 0, conflict: 0, duplicate: 0 };
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
const invalidReceipt = (field: string) =>
  new HttpError(400, ErrorCode.invalidReceipt, `${field}: not a receipt issued by this service`, { field });

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

const parseTask = (text: string): { i: number; p: unknown } | undefined => {
  try {
    const body = JSON.parse(text) as { i?: unknown; p?: unknown };
    return Number.isSafeInteger(body.i) && (body.i as number) >= 0
      ? { i: body.i as number, p: body.p }
      : undefined;
  } catch {
    return undefined;
  }
};
