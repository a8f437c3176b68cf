import { type Actor, createActor } from "xstate";
import type { RecordFound } from "../adapters/job-records.ts";
import { raiseEndCounts } from "../effects/finalize-job.ts";
import { lostReason, recordLost } from "../effects/lost-job.ts";
import { isSameWrite, type RecordSeen } from "../effects/record-updates.ts";
import { actsAsSupervisor } from "../effects/take-record.ts";
import { Deposed } from "../kernel/errors.ts";
import { isFinal, type JobRecord, type JobStatus, madeAgain, madeAgainReason } from "../kernel/job-record.ts";
import { keyedLogger } from "../kernel/logger.ts";
import type { HeldTaskBody } from "../kernel/wire.ts";
import type { JobMachine } from "../machines/job.machine.ts";
import { recordEvent } from "./job-end-wait.ts";
import { isRecorded, snapshotOf } from "./job-handle.ts";
import { hostOf, type JobActorDeps, mayTakeOver } from "./job-host.ts";
import { keepJobLease } from "./job-lease.ts";
import { persistAndLog } from "./job-persist.ts";
import { jobStartTimes } from "./job-times.ts";

export interface StartedJobActor {
  readonly actor: Actor<JobMachine>;
  /** The submit whose job this is (its record's `submitId`). */
  readonly submitId: string;
  /** Stops the actor, its timers and loops; gives the lease back (the job goes on). */
  stop(): void;
  /**
   * The job's record at `revision`, as the runtime's record watch (or a read) saw it change:
   * one at or below a revision this actor already knows (read, written or heard) is older
   * news, and ignored.
   */
  onRecord(record: JobRecord, revision: number): void;
  /** The store was made again (a server back empty): revisions known so far say nothing of the new ones. */
  storeMadeAgain(): void;
  /** Why the submit failed, as the typed error it failed with (undefined: it did not). */
  submitError(): unknown;
  /**
   * Calls `listener` when the submit found the job already made (idempotency key): this actor
   * must be replaced. One listener at a time; undefined removes it (a found record not yet
   * heard of is kept for the next one).
   */
  onExisting(listener: ((found: RecordFound) => void) | undefined): void;
  /** Calls `listener` once the actor has ended (stopped, or failed); at once if it has. */
  onEnd(listener: () => void): void;
  /** The results messages the actor kept for `results()` (undefined: not kept). */
  keptResults(): readonly string[] | undefined;
  /** Once the actor has counted the answers stored when its feed started, or after `waitMs`. */
  whenCaughtUp(waitMs: number): Promise<void>;
  /** Why the end the actor decided was not written (undefined: it was, or none was decided). */
  finalizeError(): unknown;
  /** The job's last status before an end was decided (what it is until that end is written). */
  liveStatus(): JobStatus;
  /** Stopped as another runtime took the job over (`Deposed`): its handles watch the record's end. */
  steppedDown(): boolean;
  /** Whether the record names this runtime yet, once it took the job's lease (`RecordSeen.fenced`). */
  readonly seen: Readonly<Pick<RecordSeen, "fenced">>;
}

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
  held?: readonly HeldTaskBody[],
  revision = 0,
  /** When the server stored that revision (`RecordFound.storedAt`), when it was read from the store. */
  storedAt?: number,
): StartedJobActor => {
  const { core, broker, leaseMs } = deps;
  const clock = core.clock;
  const leases = broker.leases;
  // `jobs.takeOver: false`, or no `supervisor` role (a submitter-only front end, say): this runtime
  // never supervises a job it did not submit; it only watches.
  const takeOver = mayTakeOver(core);
  const jobId = record.id;
  const log = keyedLogger(core.logger, { actor: "job", jobId, queue: record.queue });
  const { effects, chores, parent } = hostOf(deps);
  // Who hears of a job the submit found already made, and that record until someone does.
  let existingListener: ((found: RecordFound) => void) | undefined;
  let existingFound: RecordFound | undefined;
  const foundExisting = (found: RecordFound) => {
    if (existingListener) existingListener(found);
    else existingFound = found;
  };
  // Who hears of the actor's end: the runtime's registries (a few plain functions, not a
  // subscription each: an observer is three bound functions on every live job).
  let ended = false;
  const endListeners: (() => void)[] = [];

  const actor = createActor(effects.machine, {
    id: `job:${jobId}`,
    input: {
      jobId,
      queue: record.queue,
      total: record.total,
      settings: record.settings,
      ...jobStartTimes(clock, effects.steady, broker, record, resumeFrom, storedAt),
      ...(resumeFrom ? { resumeFrom, counts: record.counts } : {}),
      ...(record.reason ? { reason: record.reason } : {}),
      ...(record.dueUntil === undefined ? {} : { dueUntil: record.dueUntil }),
      ...(record.runAt === undefined ? {} : { runAt: record.runAt }),
    },
    parent,
  });
  const stopActor = () => parent.send({ type: "job.stop", job: actor });
  /**
   * Another runtime took the job over since this actor last wrote its record, and wrote it
   * naming itself: this one writes nothing more of the job, and stops (its lease, taken by
   * that runtime, is not its to give back). Its handles wait for the end the record gives, as
   * those of a runtime that only watches the job (`steppedDown`, runtime-job-handle.ts).
   */
  let deposedBy: string | undefined;
  const stepDown = async (deposed: Deposed) => {
    if (actor.getSnapshot().status !== "active" || !(await lease.stillDeposed())) return;
    if (actor.getSnapshot().status !== "active") return;
    log.warn({ supervisor: deposed.supervisor }, "another runtime took the job over: stepping down");
    deposedBy = deposed.supervisor; // before the stop: handles waiting on the actor hear of it
    stopActor();
  };
  // The record as this actor last wrote it: its end is written without reading it first.
  // A lane job watched from its record is committed (`get` opens one whose commit is not
  // written yet only once its task is read stored).
  // Its writes are its own submit's: never onto a record another submit of the key made again.
  // It acts as the job's supervisor once it holds the lease and the record names it: its
  // submitter's actor from the start, another once its take wrote the record (`takeRecord`; a
  // takeover pass's did before this actor started).
  const seen: RecordSeen = {
    ...(resumeFrom && record.lane ? { laneSubmit: record.submitId } : {}),
    submit: record.submitId,
    holder: leases.holder,
    fenced: bodies !== undefined || record.supervisor === leases.holder,
  };
  // The order of the record's writes is their revision's, never their time's (written on other
  // hosts' clocks): a write at or below the last one this actor read (`revision`, where it
  // started from), heard (`heard`) or wrote (`seen.last`) came before it, seen late.
  let heard = revision;
  const known = () => Math.max(heard, seen.last?.revision ?? 0);
  // Another submit of the key made its record again (`madeAgain`: the server's store came back
  // empty): the job is lost, and ends so here, as recorded, with nothing written (the record is
  // the new job's). Its lease, if it holds the new job's, is given back (`end`).
  let madeAgainBy: string | undefined;
  const endMadeAgain = (other: JobRecord) => {
    if (madeAgainBy !== undefined || actor.getSnapshot().status !== "active") return;
    madeAgainBy = other.submitId;
    log.warn(
      { submitId: record.submitId, madeBy: other.submitId },
      "job's record made again by another submit of its key: the job is lost; nothing of the new one is written",
    );
    const { done, failed, dead } = snapshotOf(actor);
    actor.send({
      type: "record.changed",
      status: "failed",
      counts: { done, failed, dead },
      reason: madeAgainReason(other),
    });
  };
  const run = effects.attach(actor, {
    record,
    seen,
    ...(resumeFrom ? { resumeFrom } : {}),
    ...(bodies ? { bodies } : {}),
    ...(held?.length ? { held } : {}),
    log,
    self: () => actor,
    foundExisting,
    madeAgain: endMadeAgain,
  });

  const lease = keepJobLease({
    broker,
    seen,
    clock,
    chores,
    log,
    record,
    leaseMs,
    takeOver,
    status: () => snapshotOf(actor).status,
  });

  // A stalled job may be stalled for good: its tasks gone with the server's store.
  const lostCheckMs = Math.min(60_000, Math.max(1000, record.settings.stallAfterMs));
  const checkLost = (): Promise<void> | undefined => {
    if (snapshotOf(actor).status !== "stalled" || !actsAsSupervisor(leases, seen, jobId, clock.now()))
      return undefined;
    return lostReason(broker, record, clock.now())
      .then(async (reason) => {
        if (reason === undefined || snapshotOf(actor).status !== "stalled") return;
        log.error({ reason }, "job's tasks are lost; the job fails");
        const stored = await recordLost(broker, record, snapshotOf(actor), reason, clock.now(), seen);
        if (madeAgain(stored, record.submitId)) return endMadeAgain(stored);
        // Ended meanwhile (the watch handed it that very write): nothing more to tell it.
        if (actor.getSnapshot().status === "active") actor.send(recordEvent(stored));
      })
      .catch((error) => {
        if (error instanceof Deposed) return stepDown(error);
        log.warn({ err: error }, "lost-tasks check failed; tried again later");
      });
  };
  const stopChecking = chores.add({ name: `job-lost-check:${jobId}`, everyMs: lostCheckMs, run: checkLost });

  const persisting = persistAndLog(broker, clock, actor, stopActor, log, core.loops, record, seen, stepDown);
  // Its results and its clock: started before the actor, so its reader is there before its tasks.
  const stopFeed = run.startFeed();
  const end = () => {
    if (ended) return;
    ended = true;
    run.abortEffects();
    persisting.stop();
    stopFeed();
    stopChecking();
    // Over (its end recorded, not a submit that failed, not an end whose write failed, not a
    // job whose record another submit made again): the lease goes, and with it the job from the
    // leases bucket. Stopped before its end (the runtime stops, the actor was replaced), a
    // submit that failed (rolled back, or not if the rollback failed too), an end not written,
    // or a record made again (the lease, if held, is the new job's): the lease is given back
    // and stays, run out, for another runtime (or this one's next takeover pass) to take the
    // job over at once and write the end, or the reaper to find the submit; one left for a job
    // that is over is removed by the next takeover pass. Never rejects (a lease not written
    // back runs out by its TTL). Started whether or not the runtime's loops still run; while
    // they do, `rt.stop()` waits.
    const over =
      isRecorded(actor) &&
      run.submitError() === undefined &&
      run.finalizeError() === undefined &&
      madeAgainBy === undefined;
    const released = lease.end(over);
    core.loops.track(`job-lease-release:${jobId}`, () => released);
    for (const listener of endListeners.splice(0))
      try {
        listener();
      } catch (error) {
        // One registry's failure must not keep the others from hearing of the end.
        log.warn({ err: error }, "a listener of the job's end failed");
      }
  };
  // The actor's one observer: its progress and log lines, and its end (stopped, or failed).
  actor.subscribe({ next: persisting.next, complete: end, error: end });
  actor.start();
  return {
    actor,
    submitId: record.submitId,
    stop: () => {
      stopActor();
      persisting.stop();
    },
    onRecord: (changed, at) => {
      if (at <= known() || actor.getSnapshot().status !== "active") return;
      // An actor follows its own submit's record only. While it submits, another submit's write
      // of the key is one seen late (a dead submit's rollback, which this submit then took over:
      // its time may be ahead, written on another host's clock), which ended this job as rolled
      // back, its task running; so is one that took the key over after this submit failed. Once
      // committed, it is a record made again (`madeAgain`): the store came back empty and the key
      // was submitted again.
      if (madeAgain(changed, record.submitId)) {
        const submitting = bodies && actor.getSnapshot().matches({ queuing: "submitting" });
        if (!submitting && run.submitError() === undefined) endMadeAgain(changed);
        return;
      }
      heard = at;
      // This actor's own write seen back (its commit, its progress, its end): nothing the
      // machine does not know. Each of a small job's record events (its create and its end,
      // which carries a lane job's commit) would be a macrostep of the statechart.
      if (
        isSameWrite(changed, seen.writing) ||
        isSameWrite(changed, seen.last?.record) ||
        isSameWrite(changed, seen.before)
      )
        return;
      if (bodies && isSameWrite(changed, record)) return; // the record its submit created
      // An end another runtime recorded (a cancel) while this supervisor runs the job, or
      // while its own end is not yet written, may carry fewer answers than it counted: raised
      // onto that end. Not only by `finalize` (job-effects.ts), which does so when its write
      // meets that end: heard between two tries of a write that failed, the end stops the tries
      // with no write to meet it. Raised twice, the second finds nothing more to raise.
      if (isFinal(changed.status)) {
        run.heard(changed);
        const counted = snapshotOf(actor);
        // By the lease's holder, its take's write on its way too (it read the job over): a raise
        // only ever raises, never past what was counted, and fences off no one.
        if (!isRecorded(actor) && leases.holds(jobId, clock.now()))
          core.loops.track(`job-end-counts:${jobId}`, () =>
            raiseEndCounts(broker, changed, counted, clock.now(), log, core.loops.signal),
          );
      }
      actor.send(recordEvent(changed));
    },
    storeMadeAgain: () => {
      heard = 0;
      // Its last write's revision is of the old store, where a compare-and-set on it could match
      // another write (revisions start over): the next write reads the record first.
      seen.last = undefined;
      seen.before = undefined;
      seen.lastUnwritten = false;
    },
    submitError: run.submitError,
    finalizeError: run.finalizeError,
    liveStatus: persisting.live,
    steppedDown: () => deposedBy !== undefined,
    seen,
    keptResults: run.keptResults,
    whenCaughtUp: run.whenCaughtUp,
    onExisting: (listener) => {
      existingListener = listener;
      if (listener && existingFound) listener(existingFound);
    },
    onEnd: (listener) => {
      if (ended) listener();
      else endListeners.push(listener);
    },
  };
};
