import type { Actor, AnyActorRef } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import { finalizeJob, type RecordSeen } from "../effects/finalize-job.ts";
import { type SubmitHooks, submitJob } from "../effects/submit-job.ts";
import { sleep } from "../effects/supervise-loop.ts";
import type { Clock } from "../kernel/clock.ts";
import { PermanentBrokerError } from "../kernel/errors.ts";
import { stallClockFrom } from "../kernel/held-task.ts";
import type { ResultEntry } from "../kernel/job-progress.ts";
import { type FinalizeInput, isFinal, type JobRecord, type JobStatus } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import { whenAborted } from "../kernel/signals.ts";
import type { HeldTaskBody } from "../kernel/wire.ts";
import { decodeResults } from "../kernel/wire.ts";
import { type JobEvent, type JobMachine, jobMachine, tickEveryMs } from "../machines/job.machine.ts";

/** What every job's actors share in one runtime: its broker, clock and settings. */
export interface JobEffectsShared {
  readonly broker: Broker;
  readonly clock: Clock;
  readonly leaseMs: number;
  /** `jobs.takeOver`: off, this runtime never supervises a job it did not submit. */
  readonly takeOver: boolean;
  readonly submitHooks?: SubmitHooks;
}

/** What one job's actors reach besides the shared parts: its record and its actor. */
export interface JobRun {
  readonly record: JobRecord;
  /** Status the job was resumed from (undefined: this actor submits it). */
  readonly resumeFrom?: JobStatus;
  /** The task bodies to submit; only a new job has them. */
  readonly bodies?: readonly string[];
  /** The tasks it holds until due (delayed); only a new job has them. */
  readonly held?: readonly HeldTaskBody[];
  readonly log: Logger;
  /** The actor the effects run in (made from the machine, so handed over later). */
  readonly self: () => Actor<JobMachine>;
  /** The submit found the job already made (idempotency key): this actor must be replaced. */
  readonly foundExisting: (record: JobRecord) => void;
  /** The record as this actor last wrote it (its commit, its progress): its end's write starts there. */
  readonly seen: RecordSeen;
}

/** A job's run as its effects keep it: why its submit failed, whether its next batch is a replay. */
interface RunState {
  readonly run: JobRun;
  submitError: unknown;
  /** Why the end was not written (undefined: it was, or nothing was to be). */
  finalizeError: unknown;
  replay: boolean;
  /**
   * Every results message the job's feed handed, in order from the first,
   * while they are few and small (`keptBytes`); undefined when they are not
   * kept (too many, or the feed did not read): `results()` reads the stream.
   */
  kept: string[] | undefined;
  keptSize: number;
  /** The submit, once started. */
  submitting: Effect | undefined;
  /** The end's write, once started. */
  finalizing: Effect | undefined;
}

/** One of a job's effects running beside its actor: its abort, and whether it has settled. */
interface Effect {
  readonly control: AbortController;
  settled: boolean;
}

/** Aborts an effect still running (one settled has nothing left to abort: no abort made for it). */
const abort = (effect: Effect | undefined) => {
  if (effect && !effect.settled) effect.control.abort();
};

/** How much of a job's results its actor keeps for `results()` (a small job's: one message). */
const keptBytes = 8192;

/** The event that hands a stored record to the job machine. */
export const recordEvent = (record: JobRecord) =>
  ({
    type: "record.changed",
    status: record.status,
    counts: record.counts,
    reason: record.reason ?? null,
  }) as const;

/**
 * The job machine with its real I/O provided, once per runtime: the submit
 * and the finalize, started by the machine's actions and run beside the
 * actor (answering with an event); beside it too, each job's feed (its
 * results and its clock). Each job's actor is `attach`ed to its run before
 * it starts; the actions find the run by the actor. Providing per job
 * rebuilt the whole statechart (every state node, transition and closure)
 * for each job: about half of the heap a live job took.
 */
export const provideJobEffects = (shared: JobEffectsShared) => {
  const { broker, clock, leaseMs } = shared;
  const leases = broker.leases;
  const runs = new WeakMap<AnyActorRef, RunState>();
  /** The run of the job whose actor is `self`. */
  const stateOf = (self: AnyActorRef): RunState => {
    const state = runs.get(self);
    if (!state) throw new Error("job actor started without its run attached");
    return state;
  };

  /** The lease for a watcher waiting for the end: a failed try is tried again on the next turn. */
  const takeLease = (jobId: string, log: Logger) =>
    leases.acquire(jobId, leaseMs, clock.now()).catch((error: unknown) => {
      log.debug({ err: error }, "supervision lease not taken while waiting for the job's end; tried again");
      return false;
    });

  /**
   * The job's clock: not one of the runtime's loops but a timer of the
   * job's own, stopped with its feed when the actor stops (`jobs.stop()`
   * stops every actor before the runtime's loops close), with no I/O in flight
   * to wait for. It wakes when the job's stall (or its stalled timeout) may be
   * due, never sooner than `everyMs`: a job that nothing answers ticks once a
   * `stallAfterMs`, not once a second (10,000 live jobs were 10,000 timer
   * wakes and statechart events a second). Returns its stop.
   */
  const tick = (job: Actor<JobMachine>, everyMs: number) => {
    let timer: unknown;
    let stopped = false;
    const wake = () => {
      if (stopped) return;
      job.send({ type: "clock.tick", now: clock.now() });
      timer = clock.setTimeout(wake, untilDue(job.getSnapshot(), clock.now(), everyMs));
    };
    timer = clock.setTimeout(wake, untilDue(job.getSnapshot(), clock.now(), everyMs));
    return () => {
      stopped = true;
      clock.clearTimeout(timer);
    };
  };

  /**
   * The job's feed: its results, and its clock's ticks, sent to its actor as events for the
   * actor's whole life. Not an actor invoked by the machine: an invoked actor is about 2 KB
   * of heap more on every live job (its actor, mailbox, observers and scope), for nothing
   * the machine decides. The feed dedupes nothing, the bitmap does. Returns its stop.
   */
  const feed = (state: RunState, everyMs: number): (() => void) => {
    const { record, log, self, resumeFrom } = state.run;
    const job = self();
    const jobId = record.id;
    const stopTicking = tick(job, everyMs);
    if (resumeFrom && isFinal(resumeFrom)) return stopTicking;
    const backlog: ResultEntry[] = [];
    let caughtUp = false;
    const flush = () => {
      // Answers read while the submit is still running (an idempotent resubmit of a job
      // that has them) wait for it: the machine counts from `running` on.
      // A stopped actor takes nothing more (a catch-up's last read may land after its end).
      if (!caughtUp || backlog.length === 0) return;
      const snapshot = job.getSnapshot();
      if (snapshot.status !== "active" || snapshot.matches("queuing")) return;
      job.send({
        type: "results.received",
        entries: backlog.splice(0),
        at: clock.now(),
        ...(state.replay ? { replay: true } : {}),
      });
      state.replay = false;
    };
    // Answers read while queuing are handed over once it has left: then nothing more to wait
    // for (one observer less on every live job).
    const leftQueuing = job.subscribe((s) => {
      if (s.matches("queuing")) return;
      leftQueuing.unsubscribe();
      flush();
    });
    state.kept = [];
    // Not one of the runtime's loops for the job's whole life: the broker tracks what it reads
    // from the server (a catch-up), and a live reader ends as the actor stops.
    const stopReading = broker.followResults(
      record.queue,
      jobId,
      (body, pending) => {
        if (state.kept) {
          state.keptSize += body.length;
          if (state.keptSize <= keptBytes) state.kept.push(body);
          else state.kept = undefined;
        }
        try {
          backlog.push(...decodeResults(body));
        } catch (error) {
          // Not written by jetstate: nothing in it to count.
          log.warn({ err: error }, "results message skipped");
        }
        // The first time through, hand over everything stored in one event once caught
        // up: a redrive marker must be counted before the job decides it is over.
        if (!caughtUp && pending > 0) return;
        caughtUp = true;
        flush();
      },
      {
        onCaughtUp: () => {
          caughtUp = true;
        },
        // A new submit: nothing of the job is stored before its tasks are published, after this.
        fresh: state.run.bodies !== undefined,
        onFailed: (error) => log.warn({ err: error }, "results feed failed"),
      },
    );
    return () => {
      leftQueuing.unsubscribe();
      stopTicking();
      stopReading();
    };
  };

  /** The submit: resolves with the commit time (tasks are visible to workers from then on). */
  const submit = async (state: RunState, aborted: AbortSignal): Promise<number> => {
    const { record, log } = state.run;
    const jobId = record.id;
    if (!state.run.bodies) throw new Error("nothing to submit");
    let leased: Promise<boolean> | undefined;
    try {
      // The queue's streams, advisories included: exhausted tasks must be captured before one
      // can exhaust. Inside the try: a queue that cannot be set up fails the submit, typed.
      await broker.ensureDeadLetters(record.queue);
      // Asked for beside the record's create (one round trip less), awaited before the commit
      // (`leased`); settled before the submit ends either way, so a failed submit's lease
      // write cannot land after the job's end released it.
      leased = leases.acquire(jobId, leaseMs, clock.now());
      // Its failure is the submit's, read where it is awaited: the record's claim may still
      // be out (or waiting for another submit of the key) when it comes, never unhandled.
      leased.catch(() => undefined);
      const outcome = await submitJob(broker, {
        record,
        leased,
        bodies: state.run.bodies,
        ...(state.run.held ? { held: state.run.held } : {}),
        now: () => clock.now(),
        // Its actor's stop (XState aborts it as the actor stops; `jobs.stop()` stops every
        // actor when the runtime stops, and each broker operation heeds the runtime's stop
        // too). Not an `AbortSignal.any` with the runtime's stop: on Node 20 every composite
        // leaves a weak reference in its sources' signals for good.
        signal: aborted,
        ...(shared.submitHooks ? { hooks: shared.submitHooks } : {}),
        seen: state.run.seen,
      });
      await leased;
      if (outcome.kind === "existing") {
        // Another submit (maybe another runtime's) made this job, with its own tasks and
        // settings: this actor is not its actor. `jobs` replaces it with one resumed from
        // the record; until then it stays queuing (nothing counted, nothing written).
        log.info({ status: outcome.record.status }, "idempotency key matched an existing job");
        state.run.foundExisting(outcome.record);
        await whenAborted(aborted);
      }
    } catch (error) {
      await leased?.catch(() => undefined);
      // The caller gets the typed error the submit failed with; anything else is wrapped in one.
      state.submitError =
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
  };

  /** The end decided (`input`), written by the supervisor; a watcher waits for it, or takes over. */
  const finalize = async (state: RunState, input: FinalizeInput, aborted: AbortSignal): Promise<void> => {
    const { record, log, self } = state.run;
    const jobId = record.id;
    // A submit that failed rolled back what it wrote, or wrote nothing (it lost its key's
    // claim to another request): the record under this id is not this actor's to end.
    if (state.submitError !== undefined) return;
    // Only the supervisor writes the end; a watcher waits for it (or for the lease). The wait
    // ends as soon as the actor stops, which the runtime's stop does too (`sleep` heeds
    // `aborted`): a watcher stopped meanwhile leaves the end to the supervisor, or to
    // whoever takes over.
    while (!leases.holds(jobId, clock.now())) {
      if (aborted.aborted) {
        state.finalizeError = "stopped before the end was written";
        return;
      }
      const found = await broker.getRecord(jobId).catch((error: unknown) => {
        log.debug({ err: error }, "record not read while waiting for the job's end; read again");
        return undefined;
      });
      if (found && isFinal(found.record.status)) {
        // The end as recorded: another than this actor counted (a cancel that landed first)
        // is how the job ended, as for a supervisor whose write found it below.
        if (found.record.status !== input.status && !aborted.aborted) self().send(recordEvent(found.record));
        return;
      }
      if (shared.takeOver && (await takeLease(jobId, log))) break;
      await sleep(Math.min(500, leaseMs / 4), aborted);
    }
    const stored = await finalizeJob(broker, input, () => clock.now(), state.run.seen).catch(
      (error: unknown) => {
        // The machine ends `recorded` either way; the record still says the job runs, so its
        // lease must stay for a takeover pass to find the job and write the end.
        state.finalizeError = error;
        throw error;
      },
    );
    // Another runtime recorded another end first (a cancel): that is how the job ended.
    // Not to an actor stopped meanwhile (XState warns of an event sent to a stopped actor).
    if (stored && isFinal(stored.status) && stored.status !== input.status && !aborted.aborted)
      self().send(recordEvent(stored));
  };

  /**
   * Runs one of a job's effects beside its actor and answers with the event
   * it settles with. Aborted when its state is left or the actor stops: then
   * its answer is dropped, as an invoked actor's is once it is stopped.
   */
  const start = <A>(
    state: RunState,
    effect: (signal: AbortSignal) => Promise<A>,
    answer: (outcome: { ok: true; value: A } | { ok: false; error: unknown }) => JobEvent,
  ): Effect => {
    const control = new AbortController();
    const running: Effect = { control, settled: false };
    const settle = (outcome: { ok: true; value: A } | { ok: false; error: unknown }) => {
      running.settled = true;
      if (!control.signal.aborted) state.run.self().send(answer(outcome));
    };
    effect(control.signal).then(
      (value) => settle({ ok: true, value }),
      (error: unknown) => settle({ ok: false, error }),
    );
    return running;
  };

  const machine = jobMachine.provide({
    actions: {
      startSubmit: ({ self }) => {
        const state = stateOf(self);
        state.submitting = start(
          state,
          (signal) => submit(state, signal),
          (outcome) =>
            outcome.ok
              ? { type: "submit.committed", at: outcome.value }
              : { type: "submit.failed", error: outcome.error },
        );
      },
      abortSubmit: ({ self }) => abort(stateOf(self).submitting),
      startFinalize: ({ self }, end) => {
        const state = stateOf(self);
        state.finalizing = start(
          state,
          (signal) => finalize(state, end, signal),
          () => ({ type: "finalize.settled" }),
        );
      },
      abortFinalize: ({ self }) => abort(stateOf(self).finalizing),
    },
  });

  /**
   * Binds a job's actor (before it starts) to its run; `submitError()` is why
   * its submit failed, as the typed error it failed with (undefined: it did not);
   * `finalizeError()` why the job's end was not written.
   */
  const attach = (actor: Actor<JobMachine>, run: JobRun) => {
    // A resumed job's first batch is what was answered before this actor: not a rate sample.
    const state: RunState = {
      run,
      submitError: undefined,
      finalizeError: undefined,
      replay: run.resumeFrom !== undefined,
      kept: undefined,
      keptSize: 0,
      submitting: undefined,
      finalizing: undefined,
    };
    runs.set(actor, state);
    return {
      /** Starts the job's feed (before the actor starts: its reader must be there before its tasks). */
      startFeed: () => feed(state, tickEveryMs(run.record.settings)),
      /** The actor stopped: its submit or finalize still running is aborted, its answer dropped. */
      abortEffects: () => {
        abort(state.submitting);
        abort(state.finalizing);
      },
      submitError: () => state.submitError,
      finalizeError: () => state.finalizeError,
      keptResults: () => state.kept,
    };
  };
  return { machine, attach };
};

export type JobEffects = ReturnType<typeof provideJobEffects>;

/** The longest a job's clock sleeps. */
const idleWakeMs = 60_000;

/**
 * How long the job's clock may sleep: until the stall is due (running), or
 * the stalled timeout (stalled), at least `everyMs` (the tick period the
 * machine asks for: how late a stall may be seen). At most `stallAfterMs`
 * (and a minute): a stalled job without a timeout that makes progress and
 * stalls again is seen stalling on time. Before the job runs: `everyMs`.
 */
const untilDue = (snapshot: ReturnType<Actor<JobMachine>["getSnapshot"]>, now: number, everyMs: number) => {
  const { context } = snapshot;
  const dueAt = snapshot.matches("running")
    ? stallClockFrom(context.lastProgressAt, context.dueUntil ?? undefined, now) +
      context.settings.stallAfterMs
    : snapshot.matches("stalled")
      ? context.settings.stalledTimeoutMs > 0 && context.stalledSince !== null
        ? context.stalledSince + context.settings.stalledTimeoutMs
        : Number.POSITIVE_INFINITY
      : now + everyMs;
  const longest = Math.max(everyMs, Math.min(idleWakeMs, context.settings.stallAfterMs));
  return Math.min(Math.max(everyMs, dueAt - now), longest);
};
