import { type Actor, createActor, fromCallback, fromPromise } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import { finalizeJob, recordProgress, updateRecordWith } from "../effects/finalize-job.ts";
import { type SubmitHooks, submitJob } from "../effects/submit-job.ts";
import { sleep } from "../effects/supervise-loop.ts";
import { every } from "../kernel/clock.ts";
import { PermanentBrokerError, RevisionConflict } from "../kernel/errors.ts";
import type { ResultEntry } from "../kernel/job-progress.ts";
import { isFinal, type JobRecord, type JobStatus, maxCounts, SubmitPhase } from "../kernel/job-record.ts";
import { childLogger, type Logger } from "../kernel/logger.ts";
import { type JobMachine, jobMachine } from "../machines/job.machine.ts";
import { isRecorded, type JobSnapshot, snapshotOf } from "./job-handle.ts";
import type { RuntimeCore } from "./runtime-core.ts";

export interface JobActorDeps {
  readonly core: RuntimeCore;
  readonly broker: Broker;
  /** Supervision lease: renewed every third of it; another runtime takes over after it. */
  readonly leaseMs: number;
  readonly submitHooks?: SubmitHooks;
}

export interface StartedJobActor {
  readonly actor: Actor<JobMachine>;
  /** Stops the actor, its timers and loops; releases the lease. */
  stop(): void;
  /** The job's record as the runtime's record watch saw it change (older ones are ignored). */
  onRecord(record: JobRecord): void;
  /** Why the submit failed, as the typed error it failed with (undefined: it did not). */
  submitError(): unknown;
  /** Resolves when the submit found the job already made (idempotency key): this actor must be replaced. */
  readonly existing: Promise<JobRecord>;
}

/** The event that hands a stored record to the job machine. */
const recordEvent = (record: JobRecord) =>
  ({
    type: "record.changed",
    status: record.status,
    counts: record.counts,
    reason: record.reason ?? null,
  }) as const;

const parseEntries = (body: string): ResultEntry[] | undefined => {
  try {
    const value = JSON.parse(body);
    return Array.isArray(value) ? (value as ResultEntry[]) : undefined;
  } catch {
    return undefined;
  }
};

/**
 * Creates and starts the actor of one job with its real I/O. Only the holder
 * of the job's supervision lease writes progress and the end; any other
 * runtime's actor (someone called `get`) only watches, and takes over when
 * the lease runs out — so two live runtimes never supervise one job at once.
 */
export const startJobActor = (
  deps: JobActorDeps,
  record: JobRecord,
  resumeFrom?: JobStatus,
  bodies?: readonly string[],
): StartedJobActor => {
  const { core, broker, leaseMs } = deps;
  const clock = core.clock;
  const leases = broker.leases;
  // `jobs.takeOver: false`: this runtime never supervises a job it did not submit; it only watches.
  const takeOver = core.options.jobs.takeOver;
  const jobId = record.id;
  const log = childLogger(core.logger, { actor: "job", jobId, queue: record.queue });
  const stopping = new AbortController();
  const signal = AbortSignal.any([stopping.signal, core.stopping]);
  let submitError: unknown;
  let foundExisting: (record: JobRecord) => void = () => undefined;
  const existing = new Promise<JobRecord>((resolve) => {
    foundExisting = resolve;
  });
  // A resumed job's first batch is what was answered before this actor: not a rate sample.
  let replay = resumeFrom !== undefined;
  // Records older than the one this actor started from (a watch lagging behind a redrive) say nothing new.
  let seenUpdatedAt = record.updatedAt;

  const machine = jobMachine.provide({
    actors: {
      submit: fromPromise(async ({ signal: aborted }) => {
        if (!bodies) throw new Error("nothing to submit");
        try {
          // The queue's streams, advisories included: exhausted tasks must be captured before one
          // can exhaust. Inside the try: a queue that cannot be set up fails the submit, typed.
          await broker.ensureDeadLetters(record.queue);
          await leases.acquire(jobId, leaseMs, clock.now());
          const outcome = await submitJob(broker, {
            record,
            bodies,
            now: () => clock.now(),
            signal: AbortSignal.any([aborted, signal]),
            ...(deps.submitHooks ? { hooks: deps.submitHooks } : {}),
          });
          if (outcome.kind === "existing") {
            // Another submit (maybe another runtime's) made this job, with its own tasks and
            // settings: this actor is not its actor. `jobs` replaces it with one resumed from
            // the record; until then it stays queuing (nothing counted, nothing written).
            log.info({ status: outcome.record.status }, "idempotency key matched an existing job");
            foundExisting(outcome.record);
            await new Promise<void>((resolve) => {
              if (signal.aborted) resolve();
              else signal.addEventListener("abort", () => resolve(), { once: true });
            });
          }
        } catch (error) {
          // The caller gets the typed error the submit failed with; anything else is wrapped in one.
          submitError =
            typeof error === "object" && error !== null && "_tag" in error
              ? error
              : new PermanentBrokerError({
                  message: `submit failed: ${error instanceof Error ? error.message : String(error)}`,
                  operation: "job.submit",
                  cause: error,
                });
          throw error;
        }
        return clock.now(); // committed: the job's rate and stall clocks start here
      }),
      feed: fromCallback(({ sendBack }) => {
        if (resumeFrom && isFinal(resumeFrom)) return () => undefined;
        const ac = new AbortController();
        const backlog: ResultEntry[] = [];
        let caughtUp = false;
        const flush = () => {
          // Answers read while the submit is still running (an idempotent resubmit of a job
          // that has them) wait for it: the machine counts from `running` on.
          if (!caughtUp || backlog.length === 0 || snapshotOf(actor).status === "queuing") return;
          sendBack({
            type: "results.received",
            entries: backlog.splice(0),
            at: clock.now(),
            ...(replay ? { replay } : {}),
          });
          replay = false;
        };
        const leftQueuing = actor.subscribe(() => flush());
        void broker
          .readResults(
            record.queue,
            jobId,
            (body, pending) => {
              const entries = parseEntries(body);
              if (entries) backlog.push(...entries);
              // The first time through, hand over everything stored in one event once caught
              // up: a redrive marker must be counted before the job decides it is over.
              if (!caughtUp && pending > 0) return;
              caughtUp = true;
              flush();
            },
            AbortSignal.any([ac.signal, signal]),
            () => {
              caughtUp = true;
            },
          )
          .catch((error) => log.warn({ err: error }, "results feed failed"));
        return () => {
          leftQueuing.unsubscribe();
          ac.abort();
        };
      }),
      clock: fromCallback(({ sendBack, input }) => {
        return every(clock, input.everyMs, () => sendBack({ type: "clock.tick", now: clock.now() }));
      }),
      finalize: fromPromise(async ({ input }) => {
        // A submit that failed rolled back what it wrote, or wrote nothing (it lost its key's
        // claim to another request): the record under this id is not this actor's to end.
        if (submitError !== undefined) return;
        // Only the supervisor writes the end; a watcher waits for it (or for the lease).
        while (!leases.holds(jobId, clock.now()) && !signal.aborted) {
          const found = await broker.getRecord(jobId).catch(() => undefined);
          if (found && isFinal(found.record.status)) return;
          if (takeOver && (await leases.acquire(jobId, leaseMs, clock.now()).catch(() => false))) break;
          await sleep(Math.min(500, leaseMs / 4), signal);
        }
        const stored = await finalizeJob(broker, input, () => clock.now());
        // Another runtime recorded another end first (a cancel): that is how the job ended.
        if (stored && isFinal(stored.status) && stored.status !== input.status)
          actor.send(recordEvent(stored));
      }),
    },
  });

  const actor = createActor(machine, {
    id: `job:${jobId}`,
    input: {
      jobId,
      queue: record.queue,
      total: record.total,
      settings: record.settings,
      now: clock.now(),
      ...(resumeFrom ? { resumeFrom, counts: record.counts } : {}),
      ...(record.reason ? { reason: record.reason } : {}),
    },
    ...(core.inspect ? { inspect: core.inspect.inspect } : {}),
  });

  // The lease: renewed while held; taken over by this watcher when it runs out (unless
  // `takeOver` is off).
  let supervised = false;
  let renewing = false;
  const stopLease = every(clock, Math.max(20, Math.floor(leaseMs / 3)), () => {
    // One step at a time: two renewals in flight with the same revision, the second loses
    // its compare-and-set to the first and this runtime would think it lost the lease.
    if (renewing || isFinal(snapshotOf(actor).status)) return;
    const held = leases.holds(jobId, clock.now());
    if (!held && !supervised && !takeOver) return;
    renewing = true;
    const step = held
      ? leases.renew(jobId, leaseMs, clock.now())
      : leases.acquire(jobId, leaseMs, clock.now());
    step
      .then(
        (ok) => {
          if (held && !ok) log.warn("lost the supervision lease to another runtime: watching only");
          if (!held && ok && !supervised)
            log.warn({ leaseMs }, "took over supervision of the job (its supervisor stopped renewing)");
          if (ok) supervised = true;
          else if (held) supervised = false;
        },
        (error) => log.debug({ err: error }, "lease renewal failed"),
      )
      .finally(() => {
        renewing = false;
      });
  });

  // A stalled job may be stalled for good: its tasks gone with the server's store.
  let checking = false;
  const lostCheckMs = Math.min(60_000, Math.max(1000, record.settings.stallAfterMs));
  const stopLostCheck = every(clock, lostCheckMs, () => {
    if (checking || snapshotOf(actor).status !== "stalled" || !leases.holds(jobId, clock.now())) return;
    checking = true;
    lostReason(broker, record.queue, jobId)
      .then(async (reason) => {
        if (reason === undefined || snapshotOf(actor).status !== "stalled") return;
        log.error({ reason }, "job's tasks are lost; the job fails");
        const stored = await recordLost(broker, record, snapshotOf(actor), reason, clock.now());
        actor.send(recordEvent(stored));
      })
      .catch((error) => log.warn({ err: error }, "lost-tasks check failed; tried again later"))
      .finally(() => {
        checking = false;
      });
  });

  const stopPersisting = persistAndLog(deps, actor, log);
  actor.subscribe({
    complete: () => {
      stopLostCheck();
      stopLease();
      stopping.abort();
      void leases.release(jobId);
    },
  });
  actor.start();
  return {
    actor,
    stop: () => {
      actor.stop();
      stopPersisting();
    },
    onRecord: (changed) => {
      if (changed.updatedAt < seenUpdatedAt || actor.getSnapshot().status !== "active") return;
      seenUpdatedAt = changed.updatedAt;
      actor.send(recordEvent(changed));
    },
    submitError: () => submitError,
    existing,
  };
};

/**
 * Why the job's tasks can never be answered, if they cannot: its consumer is
 * gone, and its record is gone too (the server came back with an empty
 * store) or still says it runs (every end and cancel is written to the
 * record before the consumer is deleted, so a running job has a consumer).
 * Undefined while the consumer exists, or when the record says it ended.
 */
export const lostReason = async (
  broker: Broker,
  queue: string,
  jobId: string,
): Promise<string | undefined> => {
  if (await broker.consumerExists(queue, jobId)) return undefined;
  const found = await broker.getRecord(jobId);
  if (found === undefined)
    return "tasks lost: the server's store was reset (the job's record and consumer are gone)";
  if (found.record.status === "running" || found.record.status === "stalled")
    return "tasks lost: the job's consumer is gone (deleted, or the server's store was reset)";
  return undefined;
};

/**
 * Writes the lost job's end: onto its record, or, when the record went with
 * the store, as a new record (what the job was, failed, with the reason), so
 * that `get()` anywhere says how it ended. Resolves with the record as stored
 * (another end, written first, stands).
 */
const recordLost = async (
  broker: Broker,
  record: JobRecord,
  counts: { done: number; failed: number; dead: number },
  reason: string,
  now: number,
): Promise<JobRecord> => {
  const ended = (r: JobRecord): JobRecord => ({
    ...r,
    status: "failed",
    phase: SubmitPhase.committed,
    counts: maxCounts(r.counts, { done: counts.done, failed: counts.failed, dead: counts.dead }),
    reason,
    updatedAt: now,
    finishedAt: now,
  });
  const updated = await updateRecordWith(broker, record.id, (r) =>
    isFinal(r.status) ? undefined : ended(r),
  );
  if (updated) return updated;
  const remade = ended({ ...record, counts: { done: 0, failed: 0, dead: 0 } });
  try {
    await broker.createRecord(remade);
    return remade;
  } catch (error) {
    // Made again meanwhile (another runtime recorded the loss): its end stands.
    if (!(error instanceof RevisionConflict)) throw error;
    const found = await broker.getRecord(record.id);
    if (!found) throw error;
    return found.record;
  }
};

/** One log line per state change; progress written by the supervisor at most once a second. */
const persistAndLog = (deps: JobActorDeps, actor: Actor<JobMachine>, log: Logger): (() => void) => {
  const { broker, core } = deps;
  const { clock } = core;
  const leases = broker.leases;
  let last: JobStatus | undefined;
  let timer: unknown;
  const write = () => {
    timer = undefined;
    const s = snapshotOf(actor);
    // While queuing the submitter owns the record: its commit is a compare-and-set of its own.
    if (s.status === "queuing" || isFinal(s.status) || !leases.holds(s.id, clock.now())) return;
    recordProgress(broker, s.id, s.status, s, clock.now()).catch((error) =>
      log.warn({ err: error }, "progress not recorded"),
    );
  };
  actor.subscribe({
    next: (snapshot) => {
      const s = snapshotOf(actor);
      if (s.status !== last) {
        log.info(
          {
            state: s.status,
            from: last ?? null,
            done: s.done,
            failed: s.failed,
            dead: s.dead,
            total: s.total,
            ...(s.reason ? { reason: s.reason } : {}),
          },
          `job ${last ?? "new"} → ${s.status}`,
        );
        if (s.status === "stalled") void logStall(broker, s, clock.now(), log);
        last = s.status;
        if (s.status !== "queuing" && !isFinal(s.status)) {
          cancelTimer(); // written now: a pending write would only repeat it
          write();
        }
      } else if (!timer && !isFinal(s.status) && snapshot.status === "active") {
        timer = clock.setTimeout(write, 1000);
      }
      // The end is written by finalize; a pending progress write has nothing left to say.
      if (isFinal(s.status)) cancelTimer();
      // Once the end is recorded nothing is left to supervise: stop the feed, clock and lease.
      if (isRecorded(actor) && snapshot.status === "active") queueMicrotask(() => actor.stop());
    },
    complete: () => cancelTimer(),
  });
  const cancelTimer = () => {
    if (timer !== undefined) clock.clearTimeout(timer);
    timer = undefined;
  };
  return cancelTimer;
};

/**
 * "No task picked up in X": how long, how many tasks wait, how many a worker
 * holds. The job's own count of tasks left is exact; the consumer's counts
 * are not disjoint: nats-server 2.9 counts a released (nak'd) task both in
 * `num_pending` (it rewinds) and in `num_ack_pending` until it is delivered
 * again, so a stopped worker's released tasks would read as held. Held is
 * therefore what is left beyond the pending ones, at most `num_ack_pending`.
 */
const logStall = async (broker: Broker, s: JobSnapshot, now: number, log: Logger) => {
  const counts = await broker.consumerCounts(s.queue, s.id).catch(() => undefined);
  const idleMs = now - s.lastProgressAt;
  const left = s.total - s.done - s.failed - s.dead;
  const idle = `job stalled: no task answered for ${formatDuration(idleMs)}`;
  if (!counts) return log.warn({ idleMs, left }, idle);
  const held = Math.max(0, Math.min(counts.held, left - counts.waiting));
  const waiting = left - held;
  log.warn(
    { idleMs, left, waiting, held, redelivered: counts.redelivered },
    `${idle}; ${waiting} tasks wait, ${held} held by workers` +
      (held > 0 ? " (a worker holds tasks but answers none)" : " (no worker is pulling)"),
  );
};

/** 0.3 s, 42 s, 7 min: the stall threshold may be well under a second. */
const formatDuration = (ms: number): string =>
  ms < 10_000
    ? `${(ms / 1000).toFixed(1)} s`
    : ms < 120_000
      ? `${Math.round(ms / 1000)} s`
      : `${Math.round(ms / 60_000)} min`;
