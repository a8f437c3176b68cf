import { isTransient } from "../../kernel/errors.ts";
import {
  isFinal,
  isRunning,
  type JobRecord,
  priorityOf,
  SubmitPhase,
  takesTasks,
} from "../../kernel/job-record.ts";
import type { Logger } from "../../kernel/logger.ts";
import { priorityTurn } from "../../kernel/priority-turns.ts";
import { ErrorCode, HttpError } from "./http-errors.ts";
import { LeaseBook } from "./lease-book.ts";
import type { Caller, HeartbeatOutcome, ItemOutcome, LeasePort, ReservedTask } from "./lease-port.ts";
import { OwnLeaseEnds } from "./own-lease-ends.ts";
import { ReceiptLeases } from "./receipt-leases.ts";
import type { ReceiptClaims, ReceiptSigner } from "./receipts.ts";
import type { ResultItem } from "./request-bodies.ts";
import { type Leased, TaskHandout } from "./task-handout.ts";

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
  /**
   * A clock nobody sets (the runtime's monotonic one): a request's times
   * are carried on by it from its start (receipt-clock.ts).
   * @defaultValue `now`: a clock without one is taken to move steadily (`monotonicNow`)
   */
  readonly monotonic?: () => number;
  /** How long `/queues/:queue/tasks` reuses the list of jobs (default 1000 ms). */
  readonly jobListTtlMs?: number;
  /** Open leases one token may hold through this instance (default 100). */
  readonly maxLeasesPerToken?: number;
}

/** What `reserveFromQueue` takes tasks from in turn: a job's own consumer, or the queue's lane. */
type Source = JobRecord | typeof lane;
const lane = "lane";

/**
 * The lease contract of native workers, held by HTTP workers through signed
 * receipts: reserve tasks (each with a receipt naming its delivery and its
 * lease's end: task-handout.ts), extend them (heartbeat), answer them
 * (receipt-leases.ts, then receipt-answers.ts: the native worker's answer path,
 * each delivery answered once).
 */
export class TaskLeases {
  readonly #port: LeasePort;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #book: LeaseBook;
  /** Called once leases of a queue are booked here: that queue's lease notes reach the book. */
  readonly #booked: ((queue: string) => void) | undefined;
  readonly #handout: TaskHandout;
  readonly #receipts: ReceiptLeases;
  readonly #jobListTtlMs: number;
  #jobList: { at: number; records: Promise<JobRecord[]> } | undefined;
  /**
   * Per queue, its pulls so far (its turn in `priorityTurn`); only of queues
   * with a job running at the last listing, or pulled from since.
   */
  readonly #cursors = new Map<string, number>();
  /** Jobs whose record could not be decoded, each said once while it is listed (workers poll every second). */
  readonly #unreadable = new Set<string>();

  constructor(port: LeasePort, options: TaskLeasesOptions) {
    this.#port = port;
    this.#log = options.log;
    this.#now = options.now ?? Date.now;
    this.#jobListTtlMs = options.jobListTtlMs ?? 1000;
    this.#book = new LeaseBook(options.maxLeasesPerToken ?? 100);
    this.#booked = port.limits?.follow(this.#book);
    const monotonic = options.monotonic ?? this.#now;
    const ownEnds = new OwnLeaseEnds(monotonic);
    this.#handout = new TaskHandout(port, options.signer, this.#log, { now: this.#now, monotonic, ownEnds });
    this.#receipts = new ReceiptLeases({
      port,
      signer: options.signer,
      log: this.#log,
      now: this.#now,
      monotonic,
      ownEnds,
      book: this.#book,
      openRecord: (jobId, caller, claims) => this.#openRecord(jobId, caller, claims),
    });
  }

  /**
   * Up to `max` tasks of the job, at once; none if nothing is ready. 404
   * unknown job (or not the caller's), 410 finished, 409 a lane job (its
   * tasks are reserved from its queue).
   */
  async reserve(jobId: string, max: number, caller: Caller, signal?: AbortSignal): Promise<ReservedTask[]> {
    const record = await this.#openRecord(jobId, caller);
    if (record.lane) {
      throw new HttpError(
        409,
        ErrorCode.jobInLane,
        `job ${jobId}'s tasks are on its queue's lane: reserve them from POST /queues/${record.queue}/tasks ` +
          "(or submit such jobs with lane: false)",
        { queue: record.queue },
      );
    }
    if (!isRunning(record) || (await this.#port.isPaused?.(record.queue))) return [];
    return this.#withSlots(caller, record.queue, max, (slots) =>
      this.#limited(record.queue, slots, signal, (n) => this.#handout.lease(record, n, caller, signal)),
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
    return this.#withSlots(caller, queue, max, (free) =>
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
          if (!handed) await this.#handout.handBack(tasks, 0, "tasks not handed out");
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
      if (source === lane) return await this.#handout.leaseLane(queue, max, caller, signal);
      // The list may be a second old: re-read the record, a finished job's consumer is gone.
      const fresh = await this.#port
        .getRecord(source.id)
        .catch((error) => this.#notRead(source.id, queue, error));
      // A worker gone while the record was read: nothing more is leased for it.
      if (!fresh || !isRunning(fresh.record) || signal?.aborted) return [];
      return await this.#handout.lease(fresh.record, max, caller, signal);
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
  submitResults(jobId: string, items: readonly ResultItem[], caller: Caller): Promise<ItemOutcome[]> {
    return this.#receipts.submitResults(jobId, items, caller);
  }

  /** Extends the leases of the receipts; each still open one gets a fresh receipt. */
  heartbeat(jobId: string, receipts: readonly string[], caller: Caller): Promise<HeartbeatOutcome[]> {
    return this.#receipts.heartbeat(jobId, receipts, caller);
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

  /** Runs `lease` with the slots the caller has left under its cap; 429 when it has none. */
  async #withSlots(
    caller: Caller,
    queue: string,
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
        tasks.map((t) => ({ ref: t.ref, jobId: t.jobId, queue, until: t.until })),
      );
      if (tasks.length > 0) this.#booked?.(queue);
    }
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
        // A queue with none running has no turn to keep: its next jobs start a round anew. Kept
        // for good, a cursor stayed for every queue that ever had a job running.
        const queues = new Set(running.map((r) => r.queue));
        for (const queue of this.#cursors.keys()) if (!queues.has(queue)) this.#cursors.delete(queue);
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
