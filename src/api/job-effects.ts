import type { Actor, AnyActorRef } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import { type EndMark, endRetry, finalizeJob, raiseEndCounts } from "../effects/finalize-job.ts";
import type { LoopGroup } from "../effects/loop-group.ts";
import { plainThenUntilDone } from "../effects/retry.ts";
import { type SubmitHooks, submitJob } from "../effects/submit-job.ts";
import { sleep } from "../effects/supervise-loop.ts";
import { actsAsSupervisor } from "../effects/take-record.ts";
import { aheadOfServerRead, type Clock, steadyClock } from "../kernel/clock.ts";
import { isTransient, PermanentBrokerError } from "../kernel/errors.ts";
import {
  type FinalizeInput,
  isFinal,
  type JobRecord,
  madeAgain,
  uncountedRedrive,
} from "../kernel/job-record.ts";
import { markerCounts } from "../kernel/result-wire.ts";
import { whenAborted } from "../kernel/signals.ts";
import { type JobEvent, type JobMachine, jobMachine, tickEveryMs } from "../machines/job.machine.ts";
import { endWait, otherEnd, recordEvent } from "./job-end-wait.ts";
import { jobFeed } from "./job-feed.ts";
import type { Effect, JobRun, RunState } from "./job-run.ts";

/** What every job's actors share in one runtime: its broker, clock and settings. */
export interface JobEffectsShared {
  readonly broker: Broker;
  readonly clock: Clock;
  readonly leaseMs: number;
  /** `jobs.takeOver`: off, this runtime never supervises a job it did not submit. */
  readonly takeOver: boolean;
  readonly submitHooks?: SubmitHooks;
  /** The runtime is stopping: a submit waiting on another submit of its key gives up. */
  readonly stopping?: () => boolean;
  /** The runtime's loops: work a job's actor leaves running once it ends (`rt.stop()` waits for it). */
  readonly loops: Pick<LoopGroup, "track" | "signal">;
}

/** Aborts an effect still running (one settled has nothing left to abort: no abort made for it). */
const abort = (effect: Effect | undefined) => {
  effect?.control?.abort();
};

/** How long an end refused for a redrive waits for the feed to hand its marker (read within ms). */
const reopenWaitMs = 30_000;

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
  // The jobs' own clock (their stall windows, stalled timeouts, rates): one for the runtime.
  const steady = steadyClock(clock);
  const leases = broker.leases;
  const runs = new WeakMap<AnyActorRef, RunState>();
  /** The run of the job whose actor is `self`. */
  const stateOf = (self: AnyActorRef): RunState => {
    const state = runs.get(self);
    if (!state) throw new Error("job actor started without its run attached");
    return state;
  };

  const untilSupervising = endWait(shared);

  /** The submit: resolves with the commit time on the steady clock (tasks are visible to workers from then on). */
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
        // The server's clock as this runtime's leases last read it: another submit of the key
        // is judged stuck by it.
        aheadMs: () => aheadOfServerRead(clock, leases.serverTime()),
        readClock: () => leases.readServerTime(),
        // Its actor's stop (XState aborts it as the actor stops; `jobs.stop()` stops every
        // actor when the runtime stops, and each broker operation heeds the runtime's stop
        // too). Not an `AbortSignal.any` with the runtime's stop: on Node 20 every composite
        // leaves a weak reference in its sources' signals for good.
        signal: aborted,
        ...(shared.stopping ? { stopping: shared.stopping } : {}),
        ...(shared.submitHooks ? { hooks: shared.submitHooks } : {}),
        seen: state.run.seen,
      });
      await leased;
      if (outcome.kind === "existing") {
        // Another submit (maybe another runtime's) made this job, with its own tasks and
        // settings: this actor is not its actor. `jobs` replaces it with one resumed from
        // the record; until then it stays queuing (nothing counted, nothing written).
        log.info({ status: outcome.found.record.status }, "idempotency key matched an existing job");
        state.run.foundExisting(outcome.found);
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
    return steady.now(); // committed: the job's rate and stall clocks start here
  };

  /** The end decided (`input`), written by the supervisor; a watcher waits for it, or takes over. */
  const finalize = async (state: RunState, input: FinalizeInput, aborted: AbortSignal): Promise<void> => {
    const { record, log, self } = state.run;
    // A submit that failed rolled back what it wrote, or wrote nothing (it lost its key's
    // claim to another request): the record under this id is not this actor's to end.
    if (state.submitError !== undefined) return;
    // A marker named by no redrive (an earlier version's) stands for any of that version's.
    const counted = (redrive: string) =>
      state.redrives !== undefined && [...state.redrives].some((marker) => markerCounts(marker, redrive));
    let stored: JobRecord | undefined;
    let over = false;
    const mark: EndMark = {};
    const write = async () => {
      // Held (nearly always): no wait, and no promise made for one.
      over = actsAsSupervisor(leases, state.run.seen, record.id, clock.now())
        ? false
        : await untilSupervising(state, input, aborted, mark);
      if (over || aborted.aborted) return;
      // Committed (its submit answered so, or it was read committed): its end is written as a
      // new record should the server's store have lost the record.
      const committed = state.submitError === undefined && state.submitting?.control === undefined;
      stored = await finalizeJob(
        broker,
        input,
        () => clock.now(),
        state.run.seen,
        committed ? record : undefined,
        counted,
        mark,
      );
    };
    // Written by this actor, tried again while the store fails transiently (the server away):
    // its handles, snapshot and subscribers say the end once it is written, or the one
    // recorded meanwhile (a cancel from another process, heard through the record watch, ends
    // this state and so these tries). Before, the first failure ended the actor with an end
    // not written, for a takeover pass to write, and its handles said an end that another
    // could replace. A permanent failure still leaves it to a takeover. The first try is a
    // plain call: the retry's Effect program is made only once a write failed.
    let tries = 0;
    const failed = (error: unknown, again: boolean) => {
      // Said once at warn; the tries that follow (every few seconds through an outage, for
      // every job ending then) at debug.
      if (again) {
        if (tries++ === 0) log.warn({ err: error }, "job's end not written; tried again");
        else log.debug({ err: error }, "job's end not written; tried again");
        return;
      }
      // The machine ends `recorded`; the record still says the job runs, so its lease must
      // stay for a takeover pass to find the job and write the end.
      state.finalizeError = error;
      log.warn({ err: error }, "job's end not written; left to a takeover");
    };
    await plainThenUntilDone(write, endRetry, aborted, isTransient, failed);
    // Nothing stored when the tries were aborted (the end recorded elsewhere was heard, or the
    // actor stopped): below, nothing is left to do.
    if (over || state.finalizeError !== undefined) return;
    // Another submit of the key made the record again (the store came back empty): nothing of
    // that job was written or cleaned up; this one is lost.
    if (stored && madeAgain(stored, record.submitId)) return state.run.madeAgain(stored);
    // A redrive reopened the job after this end was decided, before its write (the redrive
    // read it running): not written. Its marker, stored before the redrive's record write,
    // reaches the feed, which hands it with what it held since; the machine counts them and
    // runs the job again (leaving the end aborts this wait). Written, the end said the task
    // dead for good while it ran again, its dead letter gone: nothing left to redrive.
    const reopened = stored ? uncountedRedrive(stored, counted) : undefined;
    if (reopened !== undefined) {
      log.info({ redrive: reopened }, "end not written: a redrive reopened the job; counted, it runs again");
      state.reopenFor = reopened;
      // An end recorded meanwhile (a cancel) is how the job ended: the wait ends, and the
      // marker, come later, reopens nothing. Reopened then, the actor ran a job whose record
      // was over, and its handles never resolved.
      const endedMeanwhile = new Promise<boolean>((resolve) => {
        state.endHeard = () => resolve(true);
      });
      state.flush?.();
      const ended = await Promise.race([endedMeanwhile, sleep(reopenWaitMs, aborted).then(() => false)]);
      state.endHeard = undefined;
      // Never handed (the feed failed): the end is left to a takeover, which reads the marker.
      if (!ended && !aborted.aborted)
        state.finalizeError = `redrive ${reopened} reopened the job; its marker not read`;
      return;
    }
    // Another runtime recorded another end first (a cancel): that is how the job ended, with
    // the answers counted here raised onto it if that end says fewer (it was written from a
    // view behind them): `done()` resolves once the record has them. Through an outage the
    // actor ends with that end after the first try; the tries after it are left to the
    // runtime's loops (an actor that waited for them said the job ran while its record said
    // it was over). Not to an actor stopped meanwhile (XState warns of an event sent to a
    // stopped actor).
    if (stored && isFinal(stored.status) && otherEnd(stored, input)) {
      const { loops } = shared;
      await raiseEndCounts(broker, stored, input.counts, clock.now(), log, loops.signal, (tries) =>
        loops.track(`job-end-counts:${record.id}`, tries),
      );
      if (!aborted.aborted) self().send(recordEvent(stored));
    }
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
    const running: Effect = { control };
    const settle = (outcome: { ok: true; value: A } | { ok: false; error: unknown }) => {
      running.control = undefined;
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
      caughtUp: false,
      onCaughtUp: undefined,
      submitting: undefined,
      finalizing: undefined,
      // A redrive its record was read with came before: its marker is in the results read.
      redrives: run.record.redrive === undefined ? undefined : new Set([run.record.redrive]),
      reopenFor: undefined,
      flush: undefined,
      endHeard: undefined,
    };
    runs.set(actor, state);
    return {
      /** Starts the job's feed (before the actor starts: its reader must be there before its tasks). */
      startFeed: () => jobFeed(broker, clock, steady, state, tickEveryMs(run.record.settings)),
      /** The actor stopped: its submit or finalize still running is aborted, its answer dropped. */
      abortEffects: () => {
        abort(state.submitting);
        abort(state.finalizing);
      },
      submitError: () => state.submitError,
      finalizeError: () => state.finalizeError,
      keptResults: () => state.kept,
      whenCaughtUp: (waitMs: number) => whenCaughtUp(state, waitMs),
      /** A record written elsewhere, heard: an end while this actor's end is refused ends its wait. */
      heard: (changed: JobRecord) => {
        if (state.reopenFor === undefined || !isFinal(changed.status)) return;
        state.reopenFor = undefined;
        state.endHeard?.();
      },
    };
  };
  return { machine, attach, steady };
};

/**
 * Resolves once the job's feed has handed its actor the answers stored when
 * it started reading, or after `waitMs` (a long job's catch-up may read for
 * seconds): a wall-clock bound on a read, not the job's time.
 */
const whenCaughtUp = (state: RunState, waitMs: number): Promise<void> =>
  state.caughtUp
    ? Promise.resolve()
    : new Promise((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        timer.unref();
        const before = state.onCaughtUp;
        state.onCaughtUp = () => {
          clearTimeout(timer);
          before?.();
          resolve();
        };
      });

export type JobEffects = ReturnType<typeof provideJobEffects>;
