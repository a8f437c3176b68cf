import type { Actor } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import type { DeadLetter } from "../adapters/dead-letters.ts";
import type { RecordFound, RecordsPage } from "../adapters/job-records.ts";
import { committedRecord } from "../effects/finalize-job.ts";
import { assertSameRequest, planSubmit, type SubmitRequest } from "../effects/plan-submit.ts";
import type { ReapReport } from "../effects/reap-submits.ts";
import { InvalidArgument, RuntimeStopped } from "../kernel/errors.ts";
import { isFinal, type JobRecord, type JobStatus } from "../kernel/job-record.ts";
import { readListing } from "../kernel/list-page.ts";
import { childLogger, type Logger } from "../kernel/logger.ts";
import { check, checkListQuery, SubjectToken } from "../kernel/validation.ts";
import type { HeldTaskBody } from "../kernel/wire.ts";
import type { JobMachine } from "../machines/job.machine.ts";
import { type StartedJobActor, startJobActor } from "./job-actor.ts";
import { type JobEvents, type JobEventsOptions, jobEvents } from "./job-events.ts";
import type { JobHandle, JobSnapshot } from "./job-handle.ts";
import type { JobActorDeps } from "./job-host.ts";
import { startJobLoops } from "./job-loops.ts";
import { readRecordAgain } from "./job-read-again.ts";
import { deadLettersOf, redriveDead } from "./job-redrive.ts";
import { jobOfKey, whenCommitted } from "./job-submit.ts";
import { reapPass, restoreSupervised, type TakeoverHost } from "./job-takeover.ts";
import type { JobListQuery, JobPage, Jobs, JobsOptions } from "./jobs-face.ts";
import type { Movers } from "./movers.ts";
import { requireRole } from "./permissions.ts";
import { RecordFeed } from "./record-feed.ts";
import { recordedEnd } from "./recorded-end.ts";
import type { RuntimeCore } from "./runtime-core.ts";
import { type HandleDeps, makeHandle, shownSnapshot } from "./runtime-job-handle.ts";
import { unreadableListed } from "./unreadable-listed.ts";

interface Supervised {
  readonly handle: JobHandle;
  readonly started: StartedJobActor;
}

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
  /** Says once each record `list()` left out (one this version cannot decode). */
  readonly #unreadableListed: (page: RecordsPage) => void;
  /** What the handles given out share (one object for all of them). */
  readonly #handleDeps: HandleDeps;

  constructor(core: RuntimeCore, broker: Broker, options: JobsOptions) {
    this.#core = core;
    this.#broker = broker;
    this.#log = childLogger(core.logger, { actor: "job" });
    this.#unreadableListed = unreadableListed(this.#log, "it is left out of rt.jobs.list()");
    this.#options = options;
    this.#handleDeps = {
      core,
      broker,
      recordedEnd: (id, submitId) =>
        recordedEnd(
          { core, broker, watch: (l) => this.onRecordChange(l), readEveryMs: options.leaseMs / 2 },
          id,
          submitId,
        ),
    };
    this.records = new RecordFeed(core.loops, broker);
    this.#deps = {
      core,
      broker,
      leaseMs: options.leaseMs,
      ...(options.submitHooks ? { submitHooks: options.submitHooks } : {}),
      stopping: () => this.#stopping,
    };
    const takeover: TakeoverHost = {
      core,
      broker,
      log: this.#log,
      leaseMs: options.leaseMs,
      watching: (id) => this.#watching(id),
      local: (id) => this.#jobs.has(id),
      supervise: ({ record, revision, storedAt }) => {
        void this.#track(
          record.id,
          this.#start(record, record.status, undefined, undefined, revision, storedAt),
        ).then(
          ({ started }) => readRecordAgain(core, broker, this.#log, record.id, started),
          () => undefined,
        );
        // Its supervisor may have died with the server restarting under it: its consumer too.
        void restoreSupervised(broker, this.#log, core.clock.now(), record);
      },
      stopping: () => this.#stopping,
    };
    this.#movers = startJobLoops(core, broker, options, {
      log: this.#log,
      reap: () => this.reap(),
      takeover,
    });
    // One record watch per runtime, shared with its workers: an end written elsewhere (the
    // supervisor finished, anyone cancelled) reaches this runtime's actor for the job at once.
    // Only submitters and supervisors run job actors. Changes from now on, not every record
    // kept: an actor reads its record when it starts, and a watch of every record made each
    // runtime's start read them all (~1.1 s of CPU with 100,000 kept). Once the watch is in
    // place, actors started before it get their record again: a change between their read and
    // the watch would be missed.
    const roles = core.options.roles;
    if (roles.has("submitter") || roles.has("supervisor"))
      this.records.listen({
        onRecord: (record, revision) => this.#onRecord(record, revision),
        onPlaced: (forget) => this.#watchPlaced(forget),
      });
  }

  /** The runtime's record watch, which its workers read too. */
  readonly records: RecordFeed;

  /**
   * The record watch is in place (again): every write from now on reaches
   * the actors. The server may have restarted: each job supervised here gets
   * its consumer made again if it is gone (`jobs.memoryConsumers`). When its
   * store may have been made again (`forget`: `RecordListener.onPlaced`), the
   * revisions the actors know may be of the old store: forgotten before any
   * write of the watch reaches them, and each record is read again.
   */
  #watchPlaced(forget: boolean): void {
    for (const [id, started] of this.#started) {
      if (forget) started.storeMadeAgain();
      readRecordAgain(this.#core, this.#broker, this.#log, id, started, true);
    }
  }

  /** Every record change the runtime's one record watch delivers (a handle waiting for a job's recorded end hears it). */
  onRecordChange(listener: (record: JobRecord) => void): () => void {
    this.#recordListeners.add(listener);
    return () => this.#recordListeners.delete(listener);
  }

  readonly #recordListeners = new Set<(record: JobRecord) => void>();

  #onRecord(record: JobRecord, revision: number): void {
    for (const listener of this.#recordListeners) listener(record);
    const local = this.#jobs.get(record.id);
    if (!local) return;
    void local.then(
      (supervised) => supervised.started.onRecord(record, revision),
      // A submit that failed has no actor to tell; its error went to its submitter.
      () => undefined,
    );
  }

  async submit<Task, Result>(request: SubmitRequest<Task, Result>): Promise<JobHandle<Result>> {
    requireRole(this.#core.options.roles, "submitter", "rt.jobs.submit()");
    const maxPayload = await this.#broker.maxPayload();
    const { lane, laneMaxTasks } = this.#core.options.jobs;
    const plan = await planSubmit(request, maxPayload, this.#core.clock.now(), lane, laneMaxTasks);
    // A key reused for another request is refused before any actor starts (the submit
    // itself checks again, for a race between two submits of the key).
    const keyed = await jobOfKey(this.#broker, plan.record, (id) => this.get<Result>(id));
    if (keyed) return keyed;
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
    const found = await this.#committedRecord(id);
    if (!found) return undefined;
    const { record, revision, storedAt } = found;
    // A stalled job's stall is read on this clock by the server's (`lastWriteOn`): its actor,
    // should it take the job over later, keeps what it reads now. Half a second at most: the
    // handle is what `get` is for (a server answering 503 held it 1.5 s, one not answering 5 s).
    if (record.status === "stalled") await this.#broker.leases.readServerTime({ timeoutMs: 500 });
    // Another `get` (or a takeover) started watching it while the record was read: one actor per job.
    const meanwhile = this.#jobs.get(id);
    if (meanwhile && meanwhile !== local) return (await meanwhile).handle as JobHandle<Result>;
    // A finished job's actor ends at once, as recorded, and is dropped: its handle still answers.
    const started = await this.#track(
      id,
      this.#start(record, record.status, undefined, undefined, revision, storedAt),
    );
    if (!isFinal(record.status)) readRecordAgain(this.#core, this.#broker, this.#log, id, started.started);
    return started.handle as JobHandle<Result>;
  }

  async record(id: string): Promise<JobRecord | undefined> {
    requireRole(this.#core.options.roles, "submitter", "rt.jobs.record()");
    check(SubjectToken, id, "id");
    return (await this.#committedRecord(id))?.record;
  }

  /**
   * The job's record once its submit committed; undefined before (not a job
   * yet) or when none is stored. A lane job's commit is written with its next
   * write: until then its stored task, or a result of it, says it committed.
   * With the revision it was read at.
   */
  async #committedRecord(id: string): Promise<RecordFound | undefined> {
    return committedRecord(this.#broker, await this.#broker.getRecord(id));
  }

  /**
   * The live snapshot of a job this runtime already watches, undefined
   * otherwise; unlike `get`, it never starts watching (the HTTP API answers
   * from the record and must not leave an actor running per request).
   */
  watchedSnapshot(id: string): JobSnapshot | undefined {
    const started = this.#started.get(id);
    return started && started.actor.getSnapshot().status === "active"
      ? shownSnapshot(this.#handleDeps, started)
      : undefined;
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
    const { page, next } = await readListing(
      (asked) => this.#broker.listRecordsPage(asked),
      {
        limit,
        ...(queue === undefined ? {} : { queues: [queue] }),
        ...(status === undefined ? {} : { statuses: [status] }),
      },
      after,
    );
    this.#unreadableListed(page);
    return next === undefined ? { jobs: page.records } : { jobs: page.records, next };
  }

  async deadLetters(id: string): Promise<DeadLetter[]> {
    requireRole(this.#core.options.roles, "submitter", "rt.jobs.deadLetters()");
    check(SubjectToken, id, "id");
    return (await deadLettersOf(this.#core, this.#broker, id)).letters;
  }

  async redrive(id: string, taskIds?: ReadonlyArray<string | number>): Promise<JobHandle> {
    requireRole(this.#core.options.roles, "submitter", "rt.jobs.redrive()");
    check(SubjectToken, id, "id");
    await redriveDead(this.#core, this.#broker, this.#log, id, taskIds);
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
      // Ended already (a finished job resumed from its record ends as it starts): at once.
      ({ started }) => started.onEnd(forget),
      // A submit that failed: its error went to its submitter; the id is free again.
      () => forget(),
    );
    return supervised;
  }

  /**
   * Runs one reaper pass now (tests, admin). Its candidates are the records
   * of the supervision leases (a submit writes its lease beside its record),
   * not every record kept: the pass costs O(jobs not over).
   */
  async reap(now: () => number = () => this.#core.clock.now()): Promise<ReapReport> {
    requireRole(this.#core.options.roles, "admin", "rt.jobs.reap()");
    return reapPass(this.#broker, this.#log, this.#options.reapGraceMs, now, this.#core.clock);
  }

  async #start(
    record: JobRecord,
    resumeFrom?: JobStatus,
    bodies?: readonly string[],
    held?: readonly HeldTaskBody[],
    revision?: number,
    storedAt?: number,
  ): Promise<Supervised> {
    if (this.#stopping) throw new RuntimeStopped({ message: "runtime stopped" });
    const started = startJobActor(this.#deps, record, resumeFrom, bodies, held, revision, storedAt);
    // Until it ends (a finished job resumed from its record ends as it starts: never kept).
    const forget = () => {
      if (this.#started.get(record.id) === started) this.#started.delete(record.id);
    };
    if (started.actor.getSnapshot().status === "active") {
      this.#started.set(record.id, started);
      started.onEnd(forget);
      // A job taken over or opened here: its queue's held tasks are moved here from now on.
      if (resumeFrom) this.#follow(record, started);
    }
    const handle = makeHandle(this.#handleDeps, started);
    if (!resumeFrom) {
      // Resolve once committed; a submit that failed rejects with its typed error (it was rolled back).
      const committed = await whenCommitted(started);
      if (committed) {
        started.stop();
        return this.#start(
          committed.record,
          committed.record.status,
          undefined,
          undefined,
          committed.revision,
        );
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
    started.onEnd(this.#movers.follow(record.queue));
  }

  /** True while this runtime has a live actor for the job (a stopped one, e.g. of a job since redriven, does not count). */
  async #watching(id: string): Promise<boolean> {
    const local = this.#jobs.get(id);
    if (!local) return false;
    // A submit that failed watches nothing; its error went to its submitter.
    const supervised = await local.catch(() => undefined);
    return supervised?.started.actor.getSnapshot().status === "active";
  }
}
