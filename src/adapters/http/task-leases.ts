import { isTransient } from "../../kernel/errors.ts";
import {
  isFinal,
  isRunning,
  type JobRecord,
  laneAckWaitMs,
  priorityOf,
  SubmitPhase,
  takesTasks,
} from "../../kernel/job-record.ts";
import type { Logger } from "../../kernel/logger.ts";
import { priorityTurn } from "../../kernel/priority-turns.ts";
import { decodeTask, type TaskBody } from "../../kernel/wire.ts";
import type { LeaseSettle } from "../broker.ts";
import type { LeasedTask } from "../task-leasing.ts";
import { ErrorCode, HttpError } from "./http-errors.ts";
import { LeaseBook } from "./lease-book.ts";
import type { Caller, HeartbeatOutcome, ItemOutcome, LeasePort, ReservedTask } from "./lease-port.ts";
import { ReceiptAnswers } from "./receipt-answers.ts";
import { leaseEnd, type ReceiptClaims, type ReceiptSigner } from "./receipts.ts";
import type { ResultItem } from "./request-bodies.ts";

export type {
  Caller,
  HeartbeatOutcome,
  ItemOutcome,
  LeasePort,
  ReservedTask,
} from "./lease-port.ts";

export interface TaskLeasesOptions {
  readonly signer: ReceiptSigner;
  readonly log: Logger;
  readonly now?: () => number;
  /** How long `/queues/:queue/tasks` reuses the list of jobs (default 1000 ms). */
  readonly jobListTtlMs?: number;
  /** Open leases one token may hold through this instance (default 100). */
  readonly maxLeasesPerToken?: number;
}

/** A reserved task with what this instance keeps of its lease. */
type Leased = ReservedTask & { readonly ref: string; readonly until: number };

/** A delivery whose task message could be read, with the record of its job. */
type Readable = { readonly t: LeasedTask; readonly body: TaskBody; readonly record: JobRecord };

/** What `reserveFromQueue` takes tasks from in turn: a job's own consumer, or the queue's lane. */
type Source = JobRecord | typeof lane;
const lane = "lane";
/** A lane task whose job's record was not read goes back for this long, as at a native worker (api/workers.ts `laneJobOf`). */
const unreadJobDelayMs = 1000;

/**
 * The lease contract of native workers, held by HTTP workers through signed
 * receipts: reserve tasks (each with a receipt naming its delivery and its
 * lease's end), extend them (heartbeat), answer them (receipt-answers.ts:
 * the native worker's answer path, each delivery answered once).
 */
export class TaskLeases {
  readonly #port: LeasePort;
  readonly #signer: ReceiptSigner;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #answers: ReceiptAnswers;
  readonly #book: LeaseBook;
  readonly #jobListTtlMs: number;
  #jobList: { at: number; records: Promise<JobRecord[]> } | undefined;
  readonly #cursors = new Map<string, number>();
  /** Jobs whose record could not be decoded, each said once while it is listed (workers poll every second). */
  readonly #unreadable = new Set<string>();

  constructor(port: LeasePort, options: TaskLeasesOptions) {
    this.#port = port;
    this.#signer = options.signer;
    this.#log = options.log;
    this.#now = options.now ?? Date.now;
    this.#jobListTtlMs = options.jobListTtlMs ?? 1000;
    this.#book = new LeaseBook(options.maxLeasesPerToken ?? 100);
    this.#answers = new ReceiptAnswers(port, this.#book, this.#log, this.#now);
  }

  /**
   * Up to `max` tasks of the job, at once; none if nothing is ready. 404
   * unknown job (or not the caller's), 410 finished, 409 a lane job (its
   * task is reserved from its queue).
   */
  async reserve(jobId: string, max: number, caller: Caller, signal?: AbortSignal): Promise<ReservedTask[]> {
    const record = await this.#openRecord(jobId, caller);
    if (record.lane) {
      throw new HttpError(
        409,
        ErrorCode.jobInLane,
        `job ${jobId}'s one task is on its queue's lane: reserve it from POST /queues/${record.queue}/tasks`,
        { queue: record.queue },
      );
    }
    if (!isRunning(record) || (await this.#port.isPaused?.(record.queue))) return [];
    return this.#withSlots(caller, max, (slots) =>
      this.#limited(record.queue, slots, signal, (n) => this.#lease(record, n, caller, signal)),
    );
  }

  /**
   * Up to `max` tasks from the queue's active jobs, higher priorities first,
   * starting with a different job of a priority each call (round robin), and
   * every 8th call with the round robin of all of them (`kernel/priority-turns.ts`);
   * the queue's lane, which serves its lane jobs (all of priority 0), takes
   * its turn among them while one of them runs.
   */
  async reserveFromQueue(queue: string, max: number, caller: Caller, signal?: AbortSignal) {
    if (await this.#port.isPaused?.(queue)) return [];
    const ofQueue = (records: JobRecord[]): Source[] => {
      const running = records.filter((r) => r.queue === queue && takesTasks(r));
      const own = running.filter((r) => !r.lane);
      // No lane job listed: its lane is not asked (a queue that has none may not have the consumer).
      return own.length < running.length ? [...own, lane] : own;
    };
    let candidates = ofQueue(await this.#jobsList(this.#jobListTtlMs));
    // Nothing known for this queue: look again sooner, a job may have just been submitted.
    if (candidates.length === 0)
      candidates = ofQueue(await this.#jobsList(Math.min(100, this.#jobListTtlMs)));
    if (candidates.length === 0) return [];
    return this.#withSlots(caller, max, (free) =>
      this.#limited(queue, free, signal, async (slots) => {
        const turn = this.#cursors.get(queue) ?? 0;
        this.#cursors.set(queue, turn + 1);
        // Lane jobs are all of priority 0 (a job of another priority never goes on the lane).
        const ordered = priorityTurn(candidates, (c) => (c === lane ? 0 : priorityOf(c.settings)), turn);
        const tasks: Leased[] = [];
        let handed = false;
        try {
          for (const candidate of ordered) {
            if (tasks.length >= slots || signal?.aborted) break;
            tasks.push(...(await this.#leaseFrom(queue, candidate, slots - tasks.length, caller, signal)));
          }
          handed = !signal?.aborted;
          return handed ? tasks : [];
        } finally {
          // Leased but not handed out (the worker went away between two jobs, or something
          // failed): back to the queue now, not after an ack wait held by nobody.
          if (!handed) await this.#handBack(tasks, 0, "tasks not handed out");
        }
      }),
    );
  }

  /**
   * Up to `max` tasks of one job (or of the lane); none when they cannot be
   * had now: one job's trouble (a record this version cannot read, a fetch
   * that timed out) keeps the request from none of the others' tasks.
   */
  async #leaseFrom(queue: string, source: Source, max: number, caller: Caller, signal?: AbortSignal) {
    try {
      if (source === lane) return await this.#leaseLane(queue, max, caller, signal);
      // The list may be a second old: re-read the record, a finished job's consumer is gone.
      const fresh = await this.#port
        .getRecord(source.id)
        .catch((error) => this.#notRead(source.id, queue, error));
      // A worker gone while the record was read: nothing more is leased for it.
      if (!fresh || !isRunning(fresh.record) || signal?.aborted) return [];
      return await this.#lease(fresh.record, max, caller, signal);
    } catch (error) {
      const jobId = source === lane ? undefined : source.id;
      this.#log.warn({ queue, jobId, err: error }, "tasks not fetched; the other jobs' are reserved");
      return [];
    }
  }

  /**
   * A job's record not read: said at warn, a timeout each time, a record
   * this version cannot decode once while its job is listed (it reads no
   * better at the next poll, a second later).
   */
  #notRead(jobId: string, queue: string, error: unknown): undefined {
    if (!isTransient(error)) {
      if (this.#unreadable.has(jobId)) return;
      this.#unreadable.add(jobId);
    }
    this.#log.warn({ jobId, queue, err: error }, "job's record not read; its tasks are not reserved now");
  }

  /**
   * Runs `lease` with as many slots as the queue's limits allow (none: no
   * task); each task leased holds its permits (lease-port.ts).
   */
  async #limited(
    queue: string,
    slots: number,
    signal: AbortSignal | undefined,
    lease: (slots: number) => Promise<Leased[]>,
  ) {
    const admission = await this.#port.limits?.admit(queue, slots, signal);
    if (!admission) return lease(slots);
    let tasks: Leased[] = [];
    try {
      if (admission.slots > 0) tasks = await lease(admission.slots);
      return tasks;
    } finally {
      admission.bind(tasks);
    }
  }

  /** Stores the results, then settles the leases; per item what became of it. */
  async submitResults(jobId: string, items: readonly ResultItem[], caller: Caller): Promise<ItemOutcome[]> {
    const field = (n: number) => `results[${n}].receipt`;
    const claims = items.map((item, n) => this.#verify(item.receipt, jobId, field(n), caller));
    let record: JobRecord;
    try {
      record = await this.#openRecord(jobId, caller, claims);
    } catch (error) {
      // Over, maybe by this request's first try (its response lost): the answers it stored are told.
      const told =
        error instanceof HttpError && error.code === ErrorCode.jobFinished
          ? await this.#answers.recorded(jobId, items, claims)
          : undefined;
      if (told) return told;
      throw error;
    }
    this.#assertDeliveries(record, claims, field);
    const outcomes = await this.#answers.submit(record, items, claims, caller);
    // Answered (or found answered, or expired): the lease is over, its permit goes back. Not
    // while another request still stores its answer (`pending`; an expired receipt's too, its
    // delivery kept by that request): that one gives it back.
    await Promise.all(
      claims.map(async (c, n) => {
        const o = outcomes[n];
        if (o?.status === "pending" || o?.answered === "pending") return;
        if (o?.status === "expired" && (await this.#beingAnswered(c.r))) return;
        this.#port.limits?.end(c.r, record.queue);
      }),
    );
    return outcomes;
  }

  /** Extends the leases of the receipts; each still open one gets a fresh receipt. */
  async heartbeat(jobId: string, receipts: readonly string[], caller: Caller): Promise<HeartbeatOutcome[]> {
    const field = (n: number) => `receipts[${n}]`;
    const claims = receipts.map((r, n) => this.#verify(r, jobId, field(n), caller));
    const record = await this.#openRecord(jobId, caller, claims);
    this.#assertDeliveries(record, claims, field);
    const now = this.#now();
    // Answered already (here or on another instance), or being answered: nothing to extend.
    const answered = await Promise.all(
      claims.map(async (c): Promise<"answering" | "answered" | undefined> => {
        if (c.x <= now) return (await this.#beingAnswered(c.r)) ? "answering" : undefined;
        return this.#answerState(c.r);
      }),
    );
    const open = claims.filter((c, n) => c.x > now && !answered[n]);
    const sentAt = this.#now();
    if (open.length > 0) await this.#port.settle(open.map((c) => ({ ref: c.r, action: "working" })));
    const x = leaseEnd(sentAt, record.settings.ackWaitMs);
    const leaseMs = x - this.#now();
    const outcomes = claims.map((c, n): HeartbeatOutcome => {
      const id = `${jobId}.${c.i}`;
      if (answered[n] || c.x <= now) {
        // Being answered: the request storing the answer keeps the permit and gives it back.
        if (answered[n] !== "answering") this.#port.limits?.end(c.r, record.queue);
        return { id, status: answered[n] ? "settled" : "expired" };
      }
      this.#book.extend(caller.identity, c.r, x);
      this.#port.limits?.extend(c.r, x, record.queue);
      return { id, status: "extended", receipt: this.#signer.sign({ ...c, x }), leaseMs };
    });
    this.#log.debug(
      { jobId, workerId: caller.identity, extended: open.length, of: claims.length },
      "leases extended",
    );
    return outcomes;
  }

  /**
   * Where the delivery's answer is: being stored by a request (here, or on
   * another instance: its claim `pending`), stored, or none.
   */
  async #answerState(ref: string): Promise<"answering" | "answered" | undefined> {
    if (this.#answers.answering(ref)) return "answering";
    const found = await this.#port.answerOf(ref);
    return found === undefined ? undefined : found.status === "pending" ? "answering" : "answered";
  }

  /** Whether a request is storing the delivery's answer; an unreadable answer counts as none. */
  async #beingAnswered(ref: string): Promise<boolean> {
    return (await this.#answerState(ref).catch(() => undefined)) === "answering";
  }

  /**
   * The job's record if it may still take answers: 404 unknown (or of a
   * queue the caller may not use), 410 finished. A job that is over ends
   * the leases of it held here, and those of the receipts (`claims`) given.
   */
  async #openRecord(
    jobId: string,
    caller: Caller,
    claims: readonly ReceiptClaims[] = [],
  ): Promise<JobRecord> {
    const found = await this.#port.getRecord(jobId);
    if (found && !caller.allows(found.record.queue))
      throw new HttpError(404, ErrorCode.jobNotFound, `no job ${jobId}`);
    if (found && !isOver(found)) return found.record;
    this.#jobOver(
      jobId,
      claims.map((c) => c.r),
      found?.record.queue,
    );
    if (!found) throw new HttpError(404, ErrorCode.jobNotFound, `no job ${jobId}`);
    const { status } = found.record;
    throw new HttpError(410, ErrorCode.jobFinished, `job ${jobId} is ${status}; it takes no more work`, {
      status,
    });
  }

  /**
   * The job is over (its record gone, finished, rolled back): the leases of
   * it held here, whoever holds them, and the ones named by `refs`, give
   * back their concurrency permits and their tokens' slots now, as a native
   * worker frees its slots when a job ends. Their holders hear of it at
   * their next answer or heartbeat (404 or 410).
   */
  #jobOver(jobId: string, refs: readonly string[] = [], queue?: string): void {
    const ended = new Set([...this.#book.endJob(jobId), ...refs]);
    for (const ref of ended) this.#port.limits?.end(ref, queue);
    if (ended.size > 0)
      this.#log.info(
        { jobId, leases: ended.size },
        "leases of a job that is over ended: permits and slots given back",
      );
  }

  /**
   * The jobs this instance holds leases of that the list of active jobs
   * does not show running: each record is read again, and the leases of
   * those over end (a job cancelled while its tasks are leased, before their
   * holders answer). A record not read keeps its job's leases.
   */
  async #endLeasesOfJobsOver(running: ReadonlySet<string>): Promise<void> {
    const unlisted = [...this.#book.jobs()].filter((id) => !running.has(id));
    await Promise.all(
      unlisted.map(async (jobId) => {
        try {
          if (isOver(await this.#port.getRecord(jobId))) this.#jobOver(jobId);
        } catch (error) {
          this.#log.debug({ jobId, err: error }, "leased job's record not read; its leases are kept");
        }
      }),
    );
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
   * (checked once the record says which queue, and whether the job is on the
   * lane: the receipt does not carry it).
   */
  #assertDeliveries(record: JobRecord, claims: readonly ReceiptClaims[], field: (n: number) => string): void {
    for (const [n, c] of claims.entries()) {
      if (!this.#port.isDeliveryOf(c.r, record)) throw invalidReceipt(field(n));
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
        tasks.map((t) => ({ ref: t.ref, jobId: t.jobId, until: t.until })),
      );
    }
  }

  async #lease(record: JobRecord, max: number, caller: Caller, signal?: AbortSignal): Promise<Leased[]> {
    const startedAt = this.#now();
    const leased = await this.#port.fetchTasks(record.queue, record.id, max);
    const readable = await this.#readable(leased, { jobId: record.id });
    const tasks = await this.#handOut(
      readable.map(({ t, body }) => ({ t, body, record })),
      leaseEnd(startedAt, record.settings.ackWaitMs),
      caller,
      signal,
    );
    this.#logReserved(record.id, record.queue, tasks, caller);
    return tasks;
  }

  /**
   * Up to `max` tasks of the queue's lane jobs. The lane serves every lane
   * job of the queue, over or not: a task whose job is over (or gone) is
   * termed, never run. Its delivery limit is the server's, as a job
   * consumer's: an exhausted task is dead-lettered from its advisory.
   */
  async #leaseLane(queue: string, max: number, caller: Caller, signal?: AbortSignal): Promise<Leased[]> {
    const startedAt = this.#now();
    const leased = await this.#port.fetchLane(queue, max);
    const readable = await this.#readable(leased, { queue });
    const records = new Map<string, JobRecord | undefined>();
    await Promise.all(
      [...new Set(readable.map(({ t }) => t.jobId))].map(async (id) => {
        try {
          records.set(id, (await this.#port.getRecord(id))?.record);
        } catch (error) {
          // Left out of `records`: its task goes back, to come again (its job may well run).
          this.#log.debug({ jobId: id, queue, err: error }, "lane task's job not read; the task goes back");
        }
      }),
    );
    const over: LeasedTask[] = [];
    const notRead: LeasedTask[] = [];
    const runnable: Readable[] = [];
    for (const { t, body } of readable) {
      const record = records.get(t.jobId);
      if (!records.has(t.jobId)) notRead.push(t);
      else if (!record || !takesTasks(record)) over.push(t);
      else runnable.push({ t, body, record });
    }
    await this.#handBack(notRead, unreadJobDelayMs, "lane tasks of jobs not read");
    if (over.length > 0) await this.#endOver(queue, over, records);
    const tasks = await this.#handOut(runnable, leaseEnd(startedAt, laneAckWaitMs), caller, signal);
    // A lane job has one task.
    for (const task of tasks) this.#logReserved(task.jobId, queue, [task], caller);
    return tasks;
  }

  /** Terms lane tasks of jobs that are over (or have no record): nothing may run them. */
  async #endOver(
    queue: string,
    over: readonly LeasedTask[],
    records: ReadonlyMap<string, JobRecord | undefined>,
  ) {
    this.#log.info(
      {
        queue,
        jobs: over.map((t) => ({ jobId: t.jobId, status: records.get(t.jobId)?.status ?? "unknown" })),
      },
      "lane tasks of jobs that are over terminated, not run",
    );
    await this.#port
      .settle(over.map((t) => ({ ref: t.ref, action: "term" })))
      .catch((error: unknown) =>
        this.#log.warn(
          { queue, err: error },
          "lane tasks of jobs that are over not terminated; offered again once their lease runs out",
        ),
      );
  }

  /** The deliveries whose task message is jetstate's; the others are terminated (nothing in them to run). */
  async #readable(
    leased: readonly LeasedTask[],
    where: { jobId: string } | { queue: string },
  ): Promise<{ t: LeasedTask; body: TaskBody }[]> {
    const readable: { t: LeasedTask; body: TaskBody }[] = [];
    const unreadable: LeaseSettle[] = [];
    for (const t of leased) {
      try {
        readable.push({ t, body: decodeTask(t.body) });
      } catch {
        unreadable.push({ ref: t.ref, action: "term" });
      }
    }
    if (unreadable.length > 0) {
      this.#log.error({ ...where, count: unreadable.length }, "unreadable task messages terminated");
      await this.#port
        .settle(unreadable)
        .catch((error: unknown) =>
          this.#log.warn(
            { ...where, err: error },
            "unreadable task messages not terminated; offered again once their lease runs out",
          ),
        );
    }
    return readable;
  }

  /** Signs a receipt for each delivery, leased until `expires`; hands them back if the worker went away. */
  async #handOut(
    deliveries: readonly Readable[],
    expires: number,
    caller: Caller,
    signal?: AbortSignal,
  ): Promise<Leased[]> {
    const leaseMs = expires - this.#now();
    const tasks = deliveries.map(
      ({ t, body, record }): Leased => ({
        id: `${record.id}.${body.index}`,
        jobId: record.id,
        index: body.index,
        attempt: t.deliveryCount,
        payload: body.payload,
        receipt: this.#signer.sign({
          v: 2,
          j: record.id,
          i: body.index,
          r: t.ref,
          w: caller.identity,
          d: t.deliveryCount,
          x: expires,
        }),
        leaseMs,
        ref: t.ref,
        until: expires,
      }),
    );
    if (signal?.aborted) {
      // The worker went away before it got them: hand them back now rather than after the lease.
      await this.#handBack(tasks, 0, "tasks of a worker gone away");
      return [];
    }
    return tasks;
  }

  /** Releases leased tasks no worker gets (`what` they are, for the log if that fails): offered again after `delayMs`. */
  async #handBack(tasks: readonly { ref: string; jobId: string }[], delayMs: number, what: string) {
    if (tasks.length === 0) return;
    await this.#port
      .settle(tasks.map((t) => ({ ref: t.ref, action: "nak", delayMs })))
      .catch((error: unknown) =>
        this.#log.debug(
          { jobIds: [...new Set(tasks.map((t) => t.jobId))], err: error },
          `${what} not handed back; offered again once their lease runs out`,
        ),
      );
  }

  /** The worker's identity is logged with every reservation, per job. */
  #logReserved(jobId: string, queue: string, tasks: readonly Leased[], caller: Caller): void {
    if (tasks.length === 0) return;
    this.#log.info(
      {
        jobId,
        queue,
        workerId: caller.identity,
        tasks: tasks.map((t) => t.index),
        attempts: tasks.map((t) => t.attempt),
      },
      "tasks reserved",
    );
  }

  /** Active jobs, from a list at most `maxAgeMs` old (one listing shared by concurrent callers). */
  #jobsList(maxAgeMs: number): Promise<JobRecord[]> {
    const now = this.#now();
    if (!this.#jobList || now - this.#jobList.at > maxAgeMs) {
      const records = this.#port.activeJobs().then(async (all) => {
        // A job no longer listed is forgotten: said again should it come back unreadable.
        const listed = new Set(all.map((r) => r.id));
        for (const id of this.#unreadable) if (!listed.has(id)) this.#unreadable.delete(id);
        // A lane job whose commit is not written yet runs too (its record says `submitting`).
        const running = all.filter(takesTasks);
        await this.#endLeasesOfJobsOver(new Set(running.map((r) => r.id)));
        return running.sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
      });
      // Callers see the failure through the promise returned; here it only drops the cached list.
      records.catch(() => {
        if (this.#jobList?.records === records) this.#jobList = undefined;
      });
      this.#jobList = { at: now, records };
    }
    return this.#jobList.records;
  }
}

/** Over for good: no record, or finished, or its submit rolled back (no answer is taken any more). */
const isOver = (found: { record: JobRecord } | undefined): boolean =>
  !found || isFinal(found.record.status) || found.record.phase === SubmitPhase.rolledBack;

const invalidReceipt = (field: string) =>
  new HttpError(400, ErrorCode.invalidReceipt, `${field}: not a receipt issued by this service`, { field });
