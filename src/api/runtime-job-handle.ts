import type { Actor } from "xstate";
import type { JobPort } from "../adapters/job-port.ts";
import type { JobResults } from "../adapters/job-results.ts";
import { cancelJob } from "../effects/finalize-job.ts";
import { InvalidArgument } from "../kernel/errors.ts";
import { isFinal, type JobRecord, madeAgain, madeAgainReason } from "../kernel/job-record.ts";
import { decodeProgress, type TaskProgress } from "../kernel/wire.ts";
import type { JobMachine } from "../machines/job.machine.ts";
import { keptAnswers, readAllResults, yieldAll } from "./job-answers.ts";
import {
  type HandleSource,
  isRecorded,
  type JobHandle,
  type JobSnapshot,
  snapshotOf,
  type TaskResult,
  throttledSubscribe,
  whenRecorded,
} from "./job-handle.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/** The XState actor behind a handle a runtime made: for tests, never on the public type. */
export const jobActorOf = (handle: JobHandle<unknown>): Actor<JobMachine> => {
  if (!(handle instanceof RuntimeJobHandle))
    throw new InvalidArgument({ message: "handle: must be a job handle made by a runtime", field: "handle" });
  return RuntimeJobHandle.actorOf(handle);
};

/**
 * Cancels from any runtime: while this runtime is still submitting the job
 * its actor rolls the submit back; otherwise the record is ended with a
 * compare-and-set (counts kept), tasks purged and consumer deleted, and every
 * runtime's actor for the job, its supervisor's included, sees the end in its
 * record watch.
 */
const cancel = async (deps: HandleDeps, source: HandleSource, reason: string) => {
  const { core, broker } = deps;
  // From JavaScript anything may come: stored in the record, it would be "cancelled: [object Object]".
  if (typeof reason !== "string")
    throw new InvalidArgument({ field: "reason", message: "reason: must be a string" });
  const { actor } = source;
  const snapshot = actor.getSnapshot();
  if (snapshot.status === "active" && snapshot.matches({ queuing: "submitting" })) {
    actor.send({ type: "job.cancel", reason });
    return jobEnd(deps, source);
  }
  if (!isRecorded(actor)) {
    // An actor that opened the job a moment before counts the answers stored first: the end
    // it writes, its answer and the `cancelled` event carry them (the record's counts are up
    // to a second behind). A long catch-up is not waited out: the supervisor raises the rest.
    await source.whenCaughtUp?.(cancelCatchUpMs);
    const s = snapshotOf(actor);
    const stored = await cancelJob(broker, s.id, reason, s, core.clock.now(), {
      log: core.logger,
      submit: source.submitId,
    });
    if (stored && isFinal(stored.record.status)) source.onRecord(stored.record, stored.revision);
    // Stopped as another runtime took the job over: its end is the record's (`jobEnd`).
    else if (!source.steppedDown?.()) actor.send({ type: "job.cancel", reason });
    return jobEnd(deps, source);
  }
  // Over for this handle, but another runtime may have reopened the job since (a redrive; this
  // handle's actor ended and hears no more): the record says. Its counts are the record's.
  // A job still over costs one read: its end stands, nothing is cleaned up again (a clean-up
  // racing a redrive that had just published its tasks would remove them).
  const ended = snapshotOf(actor);
  const read = await broker.getRecord(ended.id);
  if (!read) return ended;
  // An end its actor could not write is not the one recorded: its handles show the record's.
  const unwritten = source.finalizeError?.() !== undefined;
  // Made again by another submit of the key (the store came back empty): a new job, and this
  // one lost, as `done()` says of an end not written (`recordedEndOf`).
  if (source.submitId !== undefined && madeAgain(read.record, source.submitId))
    return unwritten ? knownEnd(source, lostEnd(ended, read.record)) : ended;
  if (isFinal(read.record.status)) return unwritten ? knownEnd(source, endFrom(ended, read.record)) : ended;
  // The answers this actor counted are the job's latest when its end was never written (the
  // record may not even say its progress); not when another runtime reopened the job. Nor its
  // dead ones once a redrive ran (the record names it): that redrive took them off, and this
  // actor, ended, never counted its marker.
  const counts = unwritten
    ? read.record.redrive === undefined
      ? ended
      : { done: ended.done, failed: ended.failed, dead: read.record.counts.dead }
    : noAnswers;
  const stored = await cancelJob(broker, ended.id, reason, counts, core.clock.now(), {
    log: core.logger,
    submit: source.submitId,
  });
  const now = stored?.record;
  if (unwritten) return now && isFinal(now.status) ? knownEnd(source, endFrom(ended, now)) : ended;
  return now && isFinal(now.status) && (now.status !== ended.status || (now.reason ?? null) !== ended.reason)
    ? { ...ended, status: now.status, reason: now.reason ?? null, ...now.counts }
    : ended;
};

const noAnswers = { done: 0, failed: 0, dead: 0 };

/** How long a cancel waits for its actor to count the answers already stored. */
const cancelCatchUpMs = 2000;

/**
 * A job's handle as a runtime makes it: a class, so that a live job does not
 * carry its methods as closures (six were ~400 bytes of heap a job). Each
 * method is a getter on the prototype that returns the call bound to this
 * handle: `const { done } = job` still works, as with the closures, and a
 * closure is made only when a method is taken.
 */
class RuntimeJobHandle implements JobHandle {
  readonly id: string;
  readonly queue: string;
  readonly #deps: HandleDeps;
  readonly #source: HandleSource;

  constructor(deps: HandleDeps, source: HandleSource) {
    const { jobId, queue } = source.actor.getSnapshot().context;
    this.id = jobId;
    this.queue = queue;
    this.#deps = deps;
    this.#source = source;
  }

  /** The actor behind a handle: for tests only (`jobActorOf`), never on the handle itself. */
  static actorOf(handle: RuntimeJobHandle): Actor<JobMachine> {
    return handle.#source.actor;
  }

  get snapshot(): () => JobSnapshot {
    return () => shownSnapshot(this.#deps, this.#source);
  }

  get subscribe(): (listener: (snapshot: JobSnapshot) => void) => () => void {
    return (listener) =>
      throttledSubscribe(this.#source.actor, listener, {
        shown: () => shownSnapshot(this.#deps, this.#source),
        ended: () => endNow(this.#deps, this.#source),
      });
  }

  get done(): () => Promise<JobSnapshot> {
    return () => jobEnd(this.#deps, this.#source);
  }

  get cancel(): (reason: string) => Promise<JobSnapshot> {
    return (reason) => cancel(this.#deps, this.#source, reason);
  }

  get results(): <Result>() => AsyncIterable<TaskResult<Result>> {
    return <Result>() => {
      const kept = keptAnswers<Result>(this.#source);
      const { core, broker } = this.#deps;
      const source = this.#source;
      return kept
        ? yieldAll(kept)
        : readAllResults<Result>(core, broker, source.actor, source.submitId, () =>
            source.steppedDown?.() ? recordedEndOf(this.#deps, source) : undefined,
          );
    };
  }

  get onProgress(): (listener: (progress: TaskProgress) => void) => () => void {
    return (listener) => watchNotes(this.#deps.core, this.#deps.broker, this, listener);
  }
}

/**
 * The job as its handles show it (`snapshot()`, `subscribe()`): an end only
 * once it is recorded. While the end the actor decided is being written, and
 * after it could not be (below), the job is as it was before that end (its
 * record still says so): a cancel from another process, or a redrive, may
 * yet end it otherwise, and a handle that said `succeeded` first would then
 * say an end after an end.
 */
export const shownSnapshot = (deps: HandleDeps, source: HandleSource): JobSnapshot => {
  const s = snapshotOf(source.actor);
  // Its actor stopped as another runtime took the job over: the record's end, once read (the
  // wait starts here, as `done()` starts it).
  if (!isFinal(s.status)) return (source.steppedDown?.() && recordedEndOf(deps, source).known) || s;
  if (isRecorded(source.actor)) {
    if (source.finalizeError?.() === undefined) return s;
    const known = recordedEndOf(deps, source).known;
    if (known) return known;
  }
  return { ...s, status: source.liveStatus?.() ?? "running", reason: null };
};

/**
 * `done()`: the end the job's actor recorded. One it decided but could not
 * write (the write failed for good, or a redrive reopened the job and its
 * marker was never read) is not the job's end: the record is, once whoever
 * takes the job over writes it, or as a cancel from another process wrote it
 * meanwhile. So is the end of a job whose actor stepped down, another runtime
 * having taken it over. (A write failing transiently is tried again by the actor.)
 */
const jobEnd = async (deps: HandleDeps, source: HandleSource): Promise<JobSnapshot> => {
  const decided = await whenRecorded(source.actor).catch((error: unknown) => {
    // Stopped as another runtime took the job over (`steppedDown`): the job goes on, and its end
    // is the record's, as for a runtime that only watches it.
    if (source.steppedDown?.()) return undefined;
    throw error;
  });
  if (decided !== undefined && source.finalizeError?.() === undefined) return decided;
  return recordedEndOf(deps, source).end;
};

/** The job's end as `jobEnd` says it, at once when it is known (recorded by its actor, or read). */
const endNow = (deps: HandleDeps, source: HandleSource): JobSnapshot | Promise<JobSnapshot> => {
  if (!isRecorded(source.actor)) return jobEnd(deps, source);
  if (source.finalizeError?.() === undefined) return snapshotOf(source.actor);
  const wait = recordedEndOf(deps, source);
  return wait.known ?? wait.end;
};

interface RecordedEndWait {
  readonly end: Promise<JobSnapshot>;
  /** The end, once read. */
  known?: JobSnapshot;
}

/** One wait per job whose actor ended with its end not written, whichever of its handles asks. */
const recordedEndWaits = new WeakMap<HandleSource, RecordedEndWait>();

const recordedEndOf = (deps: HandleDeps, source: HandleSource): RecordedEndWait => {
  const known = recordedEndWaits.get(source);
  if (known) return known;
  const decided = snapshotOf(source.actor);
  const { submitId } = source;
  const waiting: RecordedEndWait = {
    end: deps.recordedEnd(decided.id, submitId).then((record) => {
      // Another submit's (the store came back empty, the key was submitted again): lost.
      const end = !record
        ? decided
        : submitId !== undefined && madeAgain(record, submitId)
          ? lostEnd(decided, record)
          : endFrom(decided, record);
      waiting.known = end;
      return end;
    }),
  };
  // Rejected as the runtime stops: `done()` says so; `snapshot()` goes on showing the job as it was.
  waiting.end.catch(() => undefined);
  recordedEndWaits.set(source, waiting);
  return waiting;
};

/** `end`, read from the record by a cancel: what the job's handles show from now on (and the wait's answer). */
const knownEnd = (source: HandleSource, end: JobSnapshot): JobSnapshot => {
  const wait = recordedEndWaits.get(source);
  if (wait) wait.known = end;
  else recordedEndWaits.set(source, { end: Promise.resolve(end), known: end });
  return end;
};

/** The end of a job whose record another submit of its key made again (`madeAgain`): lost. */
const lostEnd = (decided: JobSnapshot, record: JobRecord): JobSnapshot => ({
  ...decided,
  status: "failed",
  reason: madeAgainReason(record),
});

/** The end `record` says, with its counts unless the actor counted more answers (as the actor adopts a recorded end). */
const endFrom = (decided: JobSnapshot, record: JobRecord): JobSnapshot => {
  const { done, failed, dead } = record.counts;
  const theirs = done + failed + dead >= decided.done + decided.failed + decided.dead;
  return {
    ...decided,
    status: record.status,
    reason: record.reason ?? null,
    ...(theirs ? record.counts : {}),
  };
};

/** `onProgress`: the job's progress notes from now on, until the function returned is called. */
const watchNotes = (
  core: RuntimeCore,
  broker: JobResults,
  { id: jobId, queue }: { readonly id: string; readonly queue: string },
  listener: (progress: TaskProgress) => void,
): (() => void) => {
  const watching = core.stopLinks.link();
  broker.watchProgress(
    queue,
    jobId,
    (body) => {
      let note: TaskProgress;
      try {
        note = decodeProgress(jobId, body);
      } catch {
        return; // someone else's message on the subject
      }
      listener(note);
    },
    watching.signal,
  );
  return () => {
    watching.abort();
    core.stopLinks.unlink(watching);
  };
};

/** What every handle of a runtime shares: one object, not a field each on every live job. */
export interface HandleDeps {
  readonly core: RuntimeCore;
  readonly broker: JobPort & JobResults;
  /** Once the job's record says it is over (undefined: it is gone); rejects as the runtime stops. */
  readonly recordedEnd: (id: string, submitId?: string) => Promise<JobRecord | undefined>;
}

export const makeHandle = (deps: HandleDeps, source: HandleSource): JobHandle =>
  new RuntimeJobHandle(deps, source);
