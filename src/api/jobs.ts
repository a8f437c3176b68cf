import { randomUUID } from "node:crypto";
import type { Actor } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import type { DeadLetter } from "../adapters/dead-letters.ts";
import { updateRecordWith } from "../effects/finalize-job.ts";
import { mover } from "../effects/move-held.ts";
import {
  assertSameRequest,
  isLegacyJobFor,
  legacyJobIdFor,
  planSubmit,
  type SubmitRequest,
} from "../effects/plan-submit.ts";
import { reapSubmits } from "../effects/reap-submits.ts";
import type { SubmitHooks } from "../effects/submit-job.ts";
import { inBatches } from "../kernel/batches.ts";
import { InvalidArgument, RuntimeStopped } from "../kernel/errors.ts";
import { isFinal, type JobRecord, type JobStatus, SubmitPhase } from "../kernel/job-record.ts";
import { encodeCursor } from "../kernel/list-page.ts";
import { childLogger, type Logger } from "../kernel/logger.ts";
import { check, checkListQuery, SubjectToken, taskIndexes } from "../kernel/validation.ts";
import type { HeldTaskBody } from "../kernel/wire.ts";
import { encodeBatch, encodeRedrive, encodeTask } from "../kernel/wire.ts";
import type { JobMachine } from "../machines/job.machine.ts";
import { type JobActorDeps, type StartedJobActor, startJobActor } from "./job-actor.ts";
import { type JobEvents, type JobEventsOptions, jobEvents } from "./job-events.ts";
import { type JobHandle, type JobSnapshot, makeHandle, snapshotOf } from "./job-handle.ts";
import { Movers } from "./movers.ts";
import { requireRole } from "./permissions.ts";
import type { RuntimeCore } from "./runtime-core.ts";
import { inSubmitSpan } from "./tracing.ts";

export type { JobHandle, JobSnapshot, TaskResult } from "./job-handle.ts";

export interface JobsOptions {
  /** How often the reaper looks for submits that died (default 15 s). */
  readonly reapIntervalMs: number;
  /** Margin after a submit's commit deadline before the reaper undoes it (default 10 s). */
  readonly reapGraceMs: number;
  /** Supervision lease; a job whose supervisor died is taken over after it (default 10 s). */
  readonly leaseMs: number;
  /** Take over jobs whose supervisor died (default true). */
  readonly takeOver: boolean;
  /** Test hook: crash injection in submit. */
  readonly submitHooks?: SubmitHooks;
}

interface Supervised {
  readonly handle: JobHandle;
  readonly started: StartedJobActor;
}

/** `rt.jobs`: submit, find and redrive jobs; a job's handle watches and cancels it. */
export interface Jobs {
  /**
   * Validates, then submits atomically; resolves once the job is committed
   * (workers can see it) with its handle. A failed submit is rolled back and
   * rejects. The same idempotency key gives the same job.
   */
  submit<Task, Result>(request: SubmitRequest<Task, Result>): Promise<JobHandle<Result>>;
  /** The job with this id, watched by this runtime from now on; undefined if unknown. */
  get<Result = unknown>(id: string): Promise<JobHandle<Result> | undefined>;
  /**
   * The job's record as stored now (status, counts, reason, times), read
   * once: nothing is watched, unlike `get`. Undefined if unknown or not
   * committed yet.
   * @example
   * const record = await rt.jobs.record(id);
   * if (record?.status === "stalled") console.log("stalled since", new Date(record.updatedAt));
   */
  record(id: string): Promise<JobRecord | undefined>;
  /**
   * Job records a page at a time, in the order they were last written; all,
   * or those of a status or queue. Pass a page's `next` as `cursor` to get
   * the page after it; no `next`: the listing reached the end.
   */
  list(query?: JobListQuery): Promise<JobPage>;
  /** Tasks of the job that exhausted their deliveries, with payload and last error. */
  deadLetters(id: string): Promise<DeadLetter[]>;
  /**
   * Sends dead tasks back to the workers (all, or those named by index or
   * task id). A finished job is reopened and supervised again.
   */
  redrive(id: string, taskIds?: ReadonlyArray<string | number>): Promise<JobHandle>;
  /**
   * The events of every job (or of `queue`'s) from now on (created, progress,
   * stalled, reopened, succeeded, failed, cancelled), read from the job
   * records: any process may read them, and reading supervises nothing.
   * Each job's end comes once. Ends with `break`, `signal` or `rt.stop()`.
   * @example
   * for await (const e of rt.jobs.events({ queue: "detect" })) console.log(e.type, e.jobId, e.counts);
   */
  events(options?: JobEventsOptions): JobEvents;
}

/** What `rt.jobs.list()` lists: every field optional. */
export interface JobListQuery {
  /** Only jobs of this status. */
  readonly status?: JobStatus;
  /** Only jobs of this queue. */
  readonly queue?: string;
  /**
   * Jobs per page at most, 1 to 1,000.
   * @defaultValue 100
   */
  readonly limit?: number;
  /** The `next` of the page before, given with the same filter; from the start when absent. */
  readonly cursor?: string;
}

/**
 * One page of `rt.jobs.list()`. A page reads at most 10 × `limit` stored
 * records (at least 1,000), so with a filter that few jobs match it may hold
 * fewer than `limit`, or none, and still have a `next`. A job rewritten
 * while you page (its status or counts changed) moves to the end: it can be
 * listed twice, and a job that existed throughout the walk is never missed.
 */
export interface JobPage {
  readonly jobs: JobRecord[];
  /** The cursor of the page after this one; absent when this page reached the end. */
  readonly next?: string;
}

/** `rt.jobs` as users see it: the registry's public calls, none of its upkeep (stop, reap). */
export const jobsFace = (registry: JobRegistry): Jobs => ({
  submit: (request) => inSubmitSpan(request, () => registry.submit(request)),
  get: (id) => registry.get(id),
  record: (id) => registry.record(id),
  list: (query) => registry.list(query),
  deadLetters: (id) => registry.deadLetters(id),
  redrive: (id, taskIds) => registry.redrive(id, taskIds),
  events: (options) => registry.events(options),
});

/**
 * The jobs this runtime watches, one actor each, and the background loops
 * of its roles (reaper, takeover, dead letters). Internal: users get `Jobs`.
 */
export class JobRegistry implements Jobs {
  readonly #core: RuntimeCore;
  readonly #broker: Broker;
  readonly #deps: JobActorDeps;
  readonly #log: Logger;
  readonly #options: JobsOptions;
  readonly #jobs = new Map<string, Promise<Supervised>>();
  /** The actors of `#jobs` once started, for answers that must not wait or start one. */
  readonly #started = new Map<string, StartedJobActor>();
  /** The queues whose held tasks this runtime moves (a submitter's or a supervisor's). */
  #movers: Movers | undefined;
  /** Set by `stop()`: a takeover pass or a `get` still running then must not start an actor nobody stops. */
  #stopping = false;

  constructor(core: RuntimeCore, broker: Broker, options: JobsOptions) {
    this.#core = core;
    this.#broker = broker;
    this.#log = childLogger(core.logger, { actor: "job" });
    this.#options = options;
    this.#deps = {
      core,
      broker,
      leaseMs: options.leaseMs,
      ...(options.submitHooks ? { submitHooks: options.submitHooks } : {}),
    };
    // Each background loop belongs to a role: a runtime without it runs none of its work, so
    // its NATS user needs none of its permissions.
    const roles = core.options.roles;
    const loops = core.loops;
    // 0: no reaper here (a short-lived admin, e.g. the CLI's `cleanup --dry-run`, must change nothing).
    if (roles.has("admin") && options.reapIntervalMs > 0)
      loops.every("reaper", options.reapIntervalMs, () => this.#reapOnce());
    if (roles.has("supervisor")) {
      if (options.takeOver)
        loops.every("takeover", Math.max(50, options.leaseMs / 2), () => this.#adoptOrphans());
      loops.run("dead-letters", (signal) =>
        broker.processExhausted(signal, ({ jobId, index, error, countedDead }) =>
          this.#log.error(
            { jobId, index, err: error, countedDead },
            "exhausted task could not be dead-lettered; given up, not retried",
          ),
        ),
      );
    }
    // One record watch per runtime: an end written elsewhere (the supervisor finished, anyone
    // cancelled) reaches this runtime's actor for the job at once. Only submitters and
    // supervisors run job actors. Changes from now on, not every record kept: an actor reads its
    // record when it starts, and a watch of every record made each runtime's start read them all
    // (~1.1 s of CPU with 100,000 kept). Once the watch is in place, actors started before it
    // get their record again: a change between their read and the watch would be missed.
    // Every runtime that publishes tasks moves held (delayed) tasks once due: those of the queues
    // of the delayed jobs it watches (api/movers.ts), whose supervisor is always one of them.
    if (roles.has("submitter") || roles.has("supervisor")) {
      const moverLog = childLogger(core.logger, { actor: "mover" });
      const onHeld = mover(broker, () => core.clock.now(), moverLog);
      this.#movers = new Movers(loops, (queue, signal) => broker.consumeHeld(queue, onHeld, signal));
    }
    if (roles.has("submitter") || roles.has("supervisor"))
      loops.run("job-records", (signal) =>
        broker.watchRecordChanges(
          (record) => this.#onRecord(record),
          signal,
          () => this.#watchPlaced(),
          "records",
        ),
      );
  }

  /** The record watch is in place (again): every write from now on reaches the actors. */
  #watchPlaced(): void {
    for (const [id, started] of this.#started)
      this.#broker.getRecord(id).then(
        (found) => {
          if (found) started.onRecord(found.record);
        },
        // The next write of the record comes through the watch.
        (error: unknown) =>
          this.#log.debug({ jobId: id, err: error }, "record not read again; watch in place"),
      );
  }

  /** Every record change the runtime's one record watch delivers (flows step on their jobs' changes). */
  onRecordChange(listener: (record: JobRecord) => void): () => void {
    this.#recordListeners.add(listener);
    return () => this.#recordListeners.delete(listener);
  }

  readonly #recordListeners = new Set<(record: JobRecord) => void>();

  #onRecord(record: JobRecord): void {
    for (const listener of this.#recordListeners) listener(record);
    const local = this.#jobs.get(record.id);
    if (!local) return;
    void local.then(
      (supervised) => supervised.started.onRecord(record),
      // A submit that failed has no actor to tell; its error went to its submitter.
      () => undefined,
    );
  }

  async submit<Task, Result>(request: SubmitRequest<Task, Result>): Promise<JobHandle<Result>> {
    requireRole(this.#core.options.roles, "submitter", "rt.jobs.submit()");
    const maxPayload = await this.#broker.maxPayload();
    const plan = await planSubmit(request, maxPayload, this.#core.clock.now(), this.#core.options.jobs.lane);
    // A key reused for another request is refused before any actor starts (the submit
    // itself checks again, for a race between two submits of the key).
    const key = plan.record.idempotencyKey;
    if (key !== undefined) {
      const legacy = (await this.#broker.getRecord(legacyJobIdFor(key)))?.record;
      if (isLegacyJobFor(legacy, plan.record)) {
        const handle = await this.get<Result>(legacy.id);
        if (handle) return handle;
      }
      const found = (await this.#broker.getRecord(plan.record.id))?.record;
      assertSameRequest(found, plan.record);
      // Already committed: watched like any job, its answers so far replayed. A submit actor
      // would sit in `queuing` while workers answer, and miss those answers.
      if (found?.phase === SubmitPhase.committed) {
        const handle = await this.get<Result>(found.id);
        if (handle) return handle;
      }
    }
    const existing = this.#jobs.get(plan.record.id);
    if (existing) {
      // The same key submitted here a moment ago: once committed, its record says what it asked for.
      const { handle } = await existing;
      assertSameRequest((await this.#broker.getRecord(plan.record.id))?.record, plan.record);
      return handle as JobHandle<Result>;
    }
    // Its error reaches the caller through the await; `#track` only frees the id.
    const created = this.#track(plan.record.id, this.#start(plan.record, undefined, plan.bodies, plan.held));
    return (await created).handle as JobHandle<Result>;
  }

  async get<Result = unknown>(id: string): Promise<JobHandle<Result> | undefined> {
    requireRole(this.#core.options.roles, "submitter", "rt.jobs.get()");
    check(SubjectToken, id, "id");
    const local = this.#jobs.get(id);
    if (local) {
      const supervised = await local;
      // Its actor may have ended since (it is then dropped): a finished job is read from its record.
      if (supervised.started.actor.getSnapshot().status === "active")
        return supervised.handle as JobHandle<Result>;
    }
    const found = await this.#broker.getRecord(id);
    if (!found) return undefined;
    if (found.record.phase === SubmitPhase.submitting) return undefined; // not committed: not a job yet
    // Another `get` (or a takeover) started watching it while the record was read: one actor per job.
    const meanwhile = this.#jobs.get(id);
    if (meanwhile && meanwhile !== local) return (await meanwhile).handle as JobHandle<Result>;
    // A finished job's actor ends at once, as recorded, and is dropped: its handle still answers.
    const started = this.#track(id, this.#start(found.record, found.record.status));
    return (await started).handle as JobHandle<Result>;
  }

  async record(id: string): Promise<JobRecord | undefined> {
    requireRole(this.#core.options.roles, "submitter", "rt.jobs.record()");
    check(SubjectToken, id, "id");
    const found = await this.#broker.getRecord(id);
    // Not committed: not a job yet (as `get` answers).
    return found && found.record.phase !== SubmitPhase.submitting ? found.record : undefined;
  }

  /**
   * The live snapshot of a job this runtime already watches, undefined
   * otherwise; unlike `get`, it never starts watching (the HTTP API answers
   * from the record and must not leave an actor running per request).
   */
  watchedSnapshot(id: string): JobSnapshot | undefined {
    const started = this.#started.get(id);
    return started && started.actor.getSnapshot().status === "active" ? snapshotOf(started.actor) : undefined;
  }

  /**
   * The actor of a job this runtime watches now (it submits or supervises
   * it, or someone here called `get`), undefined otherwise; never starts one.
   * The dashboard draws its full state from it.
   */
  watchedActor(id: string): Actor<JobMachine> | undefined {
    const started = this.#started.get(id);
    return started && started.actor.getSnapshot().status === "active" ? started.actor : undefined;
  }

  async list(query: JobListQuery = {}): Promise<JobPage> {
    requireRole(this.#core.options.roles, "submitter", "rt.jobs.list()");
    const { status, queue, limit, after } = checkListQuery(query);
    const page = await this.#broker.listRecordsPage({
      limit,
      ...(after === undefined ? {} : { after }),
      ...(queue === undefined ? {} : { queues: [queue] }),
      ...(status === undefined ? {} : { statuses: [status] }),
    });
    return page.next === undefined
      ? { jobs: page.records }
      : { jobs: page.records, next: encodeCursor(page.next) };
  }

  async deadLetters(id: string): Promise<DeadLetter[]> {
    requireRole(this.#core.options.roles, "submitter", "rt.jobs.deadLetters()");
    check(SubjectToken, id, "id");
    return (await this.#deadLettersOf(id)).letters;
  }

  /** The job's record and dead letters, stored under its queue; an unknown job has none. */
  async #deadLettersOf(id: string): Promise<{ record?: JobRecord; letters: DeadLetter[] }> {
    const found = await this.#broker.getRecord(id);
    if (!found) return { letters: [] };
    const { record } = found;
    return { record, letters: await this.#broker.listDeadLetters(record.queue, id) };
  }

  async redrive(id: string, taskIds?: ReadonlyArray<string | number>): Promise<JobHandle> {
    requireRole(this.#core.options.roles, "submitter", "rt.jobs.redrive()");
    check(SubjectToken, id, "id");
    const wanted = taskIndexes(taskIds);
    const { record, letters } = await this.#deadLettersOf(id);
    const chosen = letters.filter((l) => !wanted || wanted.includes(l.index));
    if (!record || chosen.length === 0) {
      throw new InvalidArgument({
        message: `taskIds: no dead letter to redrive for job ${id}`,
        field: "taskIds",
      });
    }
    const nonce = randomUUID().slice(0, 8);
    // Consumer, marker and tasks first, the record last: workers follow a job once its
    // record says running, and must then find its consumer (a lane job's is its queue's lane).
    if (!record.lane) await this.#broker.createConsumer(record.queue, id, record.settings);
    // The marker before the tasks: whoever counts reads "forget the dead answer" before the new one.
    await this.#broker.publishResults(
      record.queue,
      id,
      encodeBatch(chosen.map((l) => encodeRedrive(l.index))),
      `redrive.${id}.${nonce}`,
    );
    const bodies = chosen.map((l) => encodeTask(l.index, l.payload ?? null));
    await this.#broker.publishTasks({ ...record, submitId: `r${nonce}` }, bodies, this.#core.stopping);
    await updateRecordWith(this.#broker, id, (r) => {
      const { reason: _reason, finishedAt: _finished, ...rest } = r;
      return {
        ...rest,
        status: isFinal(r.status) ? "running" : r.status,
        counts: { ...r.counts, dead: Math.max(0, r.counts.dead - chosen.length) },
        updatedAt: this.#core.clock.now(),
      };
    });
    // A finished job's lease went with its end: a run-out one now, once the record says running
    // (a takeover pass that read it finished would remove it), so that a supervisor takes the
    // job over when this runtime does not supervise it (`takeOver: false`, e.g. the CLI).
    await this.#broker.leases.enrol(id);
    await this.#broker.removeDeadLetters(chosen.map((l) => l.seq));
    this.#log.info({ jobId: id, tasks: chosen.map((l) => l.index) }, "dead tasks redriven");
    const handle = await this.get(id);
    if (!handle) throw new InvalidArgument({ message: `id: no job ${id}`, field: "id" });
    return handle;
  }

  events(options?: JobEventsOptions): JobEvents {
    requireRole(this.#core.options.roles, "submitter", "rt.jobs.events()");
    return jobEvents(this.#core, this.#broker, options);
  }

  /** Stops watching (jobs go on; another runtime or a restart takes them over); no actor starts after it. */
  async stop(): Promise<void> {
    this.#stopping = true;
    const all = await Promise.allSettled(this.#jobs.values());
    for (const s of all) if (s.status === "fulfilled") s.value.started.stop();
    this.#jobs.clear();
    this.#started.clear();
  }

  /**
   * Registers the job's actor under its id until it ends: an actor that
   * ended (its end recorded, its runtime or a replacement stopped it) is
   * dropped, so a runtime keeps only the jobs it watches now, never the ones
   * it has finished. A handle given out keeps its actor, and still answers.
   */
  #track(id: string, supervised: Promise<Supervised>): Promise<Supervised> {
    this.#jobs.set(id, supervised);
    const forget = () => {
      if (this.#jobs.get(id) === supervised) this.#jobs.delete(id);
    };
    supervised.then(
      ({ started }) => {
        // Ended already (a finished job resumed from its record ends as it starts).
        if (started.actor.getSnapshot().status !== "active") return forget();
        started.actor.subscribe({ complete: forget, error: forget });
      },
      // A submit that failed: its error went to its submitter; the id is free again.
      () => forget(),
    );
    return supervised;
  }

  /**
   * Runs one reaper pass now (tests, admin). Its candidates are the records
   * of the supervision leases (a submit takes its lease before it writes its
   * record), not every record kept: the pass costs O(jobs not over).
   */
  async reap(now: () => number = () => this.#core.clock.now()) {
    requireRole(this.#core.options.roles, "admin", "rt.jobs.reap()");
    const leased = await this.#broker.leases.list();
    const revisions = new Map(leased.map(({ jobId, revision }) => [jobId, revision]));
    const submits = (await inBatches(leased, ({ jobId }) => this.#broker.getRecord(jobId)))
      .map((found) => found?.record)
      .filter((record): record is JobRecord => record?.phase === SubmitPhase.submitting);
    const report = await reapSubmits(this.#broker, now, this.#options.reapGraceMs, submits);
    // A rolled-back submit has no supervisor: its lease goes (a resubmit's, written since, stays).
    for (const id of report.rolledBack)
      await this.#broker.leases
        .remove(id, revisions.get(id))
        .catch((error: unknown) =>
          this.#log.debug({ jobId: id, err: error }, "lease of a rolled-back submit not removed; it expires"),
        );
    return report;
  }

  async #start(
    record: JobRecord,
    resumeFrom?: JobStatus,
    bodies?: readonly string[],
    held?: readonly HeldTaskBody[],
  ): Promise<Supervised> {
    if (this.#stopping) throw new RuntimeStopped({ message: "runtime stopped" });
    const started = startJobActor(this.#deps, record, resumeFrom, bodies, held);
    // Until it ends (a finished job resumed from its record ends as it starts: never kept).
    const forget = () => {
      if (this.#started.get(record.id) === started) this.#started.delete(record.id);
    };
    if (started.actor.getSnapshot().status === "active") {
      this.#started.set(record.id, started);
      started.actor.subscribe({ complete: forget, error: forget });
      // A job taken over or opened here: its queue's held tasks are moved here from now on.
      if (resumeFrom) this.#follow(record, started);
    }
    const handle = makeHandle(this.#core, this.#broker, started);
    if (!resumeFrom) {
      // Resolve once committed; a submit that failed rejects with its typed error (it was rolled back).
      const committed = await new Promise<JobRecord | undefined>((resolve, reject) => {
        const check = () => {
          const s = started.actor.getSnapshot();
          if (s.matches("queuing")) return false;
          const error = started.submitError();
          if (error !== undefined) reject(error);
          else resolve(undefined);
          return true;
        };
        // The key named a job another submit (maybe another runtime's) committed: supervise or
        // watch that one, as recorded, not a job of this request's tasks.
        // Never rejects: it resolves only when the key named a committed job.
        void started.existing.then((record) => {
          sub.unsubscribe();
          resolve(record);
        });
        const sub = started.actor.subscribe({
          next: () => {
            if (check()) sub.unsubscribe();
          },
          complete: () => {
            if (!check()) reject(new RuntimeStopped({ message: "runtime stopped during submit" }));
          },
        });
        if (check()) sub.unsubscribe();
      });
      if (committed) {
        started.stop();
        return this.#start(committed, committed.status);
      }
      // A new job: followed once committed. A held task is not moved before its commit anyway,
      // and a mover pulling while the submit holds slows the holding down (bench/sched-delayed.ts).
      this.#follow(record, started);
    }
    return { handle, started };
  }

  /**
   * A live job that holds tasks: its queue's held tasks are moved here while
   * its actor lives (api/movers.ts says the rule).
   */
  #follow(record: JobRecord, started: StartedJobActor): void {
    if (record.runAt === undefined || !this.#movers || started.actor.getSnapshot().status !== "active")
      return;
    const letGo = this.#movers.follow(record.queue);
    started.actor.subscribe({ complete: letGo, error: letGo });
  }

  /** True while this runtime has a live actor for the job (a stopped one, e.g. of a job since redriven, does not count). */
  async #watching(id: string): Promise<boolean> {
    const local = this.#jobs.get(id);
    if (!local) return false;
    // A submit that failed watches nothing; its error went to its submitter.
    const supervised = await local.catch(() => undefined);
    return supervised?.started.actor.getSnapshot().status === "active";
  }

  /**
   * Jobs still running whose supervisor stopped renewing its lease: watch
   * them here (the actor takes the lease). Found from the leases, one per job
   * not over, never from every record kept: a pass reads the leases (one
   * scan) and the record of each that ran out.
   */
  async #adoptOrphans(): Promise<void> {
    const now = this.#core.clock.now();
    const runOut = [];
    for (const listed of await this.#broker.leases.list())
      if (listed.lease.until <= now && !(await this.#watching(listed.jobId))) runOut.push(listed);
    // 32 at a time: the jobs of a dead supervisor were taken over one after the other, each a
    // few round trips, so the last of 24 came a second after the first (five-processes test).
    await inBatches(runOut, async ({ jobId, revision }) => {
      if (this.#stopping) return;
      await this.#adopt(jobId, revision).catch((error: unknown) =>
        // Not now (a read or the lease failed): the lease stays, and the next pass tries again.
        this.#log.debug({ jobId, err: error }, "orphan not taken over now; tried again"),
      );
    });
  }

  /** One lease that ran out: its job taken over if it runs, the lease removed if the job is over or gone. */
  async #adopt(jobId: string, revision: number): Promise<void> {
    const found = await this.#broker.getRecord(jobId);
    if (!found || isOver(found.record)) {
      // Stale (its supervisor died after the end, a cancel ended it meanwhile, the record is
      // gone): removed, so the bucket holds the jobs not over. Up to the revision listed: a
      // lease written since (a resubmit of the key) stays.
      await this.#broker.leases.remove(jobId, revision);
      return;
    }
    if (found.record.phase === SubmitPhase.submitting) return; // a submit that died: the reaper's
    if (!(await this.#broker.leases.acquire(jobId, this.#options.leaseMs, this.#core.clock.now()))) return;
    // A `get` here may have started watching it meanwhile: that actor now holds the lease.
    if (await this.#watching(jobId)) return;
    // Read again now that the lease is held: a supervisor that finished (or a cancel) between
    // the read and the lease released it, and a job adopted from the stale record would be
    // watched forever.
    const again = await this.#broker.getRecord(jobId).catch((error: unknown) => {
      this.#log.debug({ jobId, err: error }, "record of an orphan not read; not taken over now");
      return null;
    });
    if (await this.#watching(jobId)) return;
    if (again === undefined || (again && isOver(again.record))) return this.#broker.leases.release(jobId);
    // Not read, or stopping: given back, for the next pass or another runtime to take it over at once.
    if (again === null || this.#stopping) return this.#broker.leases.giveBack(jobId);
    const { record } = again;
    this.#log.warn({ jobId: record.id }, "taking over a job whose supervisor stopped renewing its lease");
    this.#track(record.id, this.#start(record, record.status));
  }

  async #reapOnce(): Promise<void> {
    const report = await this.reap();
    if (report.rolledBack.length + report.rolledForward.length > 0) {
      this.#log.warn({ ...report }, "reaper finished submits that died");
    }
  }
}

/** Over: its end recorded (a committed job) or its submit rolled back; a submit in progress is not. */
const isOver = (record: JobRecord): boolean =>
  record.phase !== SubmitPhase.submitting && isFinal(record.status);
