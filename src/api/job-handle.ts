import type { Actor } from "xstate";
import type { JobPort } from "../adapters/job-port.ts";
import type { JobResults } from "../adapters/job-results.ts";
import { cancelJob } from "../effects/finalize-job.ts";
import { InvalidArgument, RuntimeStopped, workOver } from "../kernel/errors.ts";
import { isFinal, type JobRecord, type JobStatus, priorityOf } from "../kernel/job-record.ts";
import { decodeProgress, decodeResults, type ResultRecord, type TaskProgress } from "../kernel/wire.ts";
import type { JobMachine } from "../machines/job.machine.ts";
import type { RuntimeCore } from "./runtime-core.ts";

export interface JobSnapshot {
  readonly id: string;
  readonly queue: string;
  readonly status: JobStatus;
  readonly total: number;
  readonly done: number;
  readonly failed: number;
  readonly dead: number;
  /** Tasks answered per second (time-decayed, 10 s). */
  readonly throughput: number;
  /** Estimated time to the end, null until there is a rate. */
  readonly etaMs: number | null;
  readonly reason: string | null;
  /** Higher runs first on a busy worker (`submit({ priority })`, −100..100). */
  readonly priority: number;
  readonly startedAt: number;
  /** Last time a task was answered (ms since epoch). */
  readonly lastProgressAt: number;
  /** A delayed job: when its first held task is due (ms since epoch). Absent: none was held. */
  readonly runAt?: number;
}

export type TaskResult<Result> =
  | { readonly taskId: string; readonly index: number; readonly ok: true; readonly result: Result }
  | {
      readonly taskId: string;
      readonly index: number;
      readonly ok: false;
      readonly error: string;
      readonly dead: boolean;
    };

export interface JobHandle<Result = unknown> {
  readonly id: string;
  readonly queue: string;
  snapshot(): JobSnapshot;
  /** Live state at a bounded rate (≤ 10 per second; the final state always arrives). */
  subscribe(listener: (snapshot: JobSnapshot) => void): () => void;
  /** Settles on `succeeded` or `failed` with the final snapshot (it does not reject for a failed job). */
  done(): Promise<JobSnapshot>;
  /** Every task's result once, as stored (a redelivered task appears once). */
  results(): AsyncIterable<TaskResult<Result>>;
  /**
   * Progress notes of the job's tasks (`ctx.progress(info)` in a handler),
   * from now on, until the returned function is called or the runtime stops.
   * Best effort: never stored, so notes sent while nobody listened are gone.
   * @example
   * const stop = job.onProgress(({ index, info }) => console.log(index, info));
   */
  onProgress(listener: (progress: TaskProgress) => void): () => void;
  /** Ends the job as `failed` with the reason: remaining tasks purged, consumer deleted. */
  cancel(reason: string): Promise<JobSnapshot>;
}

/** The XState actor behind a handle a runtime made: for tests, never on the public type. */
export const jobActorOf = (handle: JobHandle<unknown>): Actor<JobMachine> => {
  if (!(handle instanceof RuntimeJobHandle))
    throw new InvalidArgument({ message: "handle: must be a job handle made by a runtime", field: "handle" });
  return RuntimeJobHandle.actorOf(handle);
};

const maxUpdatesPerSecond = 10;

const topStatus = (value: unknown): JobStatus =>
  (typeof value === "string" ? value : Object.keys(value as object)[0]) as JobStatus;

export const snapshotOf = (actor: Actor<JobMachine>): JobSnapshot => {
  const { value, context: c } = actor.getSnapshot();
  return {
    id: c.jobId,
    queue: c.queue,
    status: topStatus(value),
    total: c.total,
    // Never below the record: its results may not have been replayed here yet.
    done: Math.max(c.done, c.recorded.done),
    failed: Math.max(c.failed, c.recorded.failed),
    dead: Math.max(c.dead, c.recorded.dead),
    throughput: Math.round(c.throughput * 10) / 10,
    etaMs: c.etaMs,
    reason: c.reason,
    priority: priorityOf(c.settings),
    startedAt: c.startedAt,
    lastProgressAt: c.lastProgressAt,
    ...(c.runAt === null ? {} : { runAt: c.runAt }),
  };
};

export const isRecorded = (actor: Actor<JobMachine>): boolean => {
  const s = actor.getSnapshot();
  return s.matches({ succeeded: "recorded" }) || s.matches({ failed: "recorded" });
};

/** Resolves with the final snapshot; rejects with `RuntimeStopped` if supervision stops first. */
const whenRecorded = (actor: Actor<JobMachine>): Promise<JobSnapshot> =>
  new Promise((resolve, reject) => {
    if (isRecorded(actor)) return resolve(snapshotOf(actor));
    if (actor.getSnapshot().status === "stopped") {
      return reject(new RuntimeStopped({ message: "job supervision stopped before the job ended" }));
    }
    const sub = actor.subscribe({
      next: () => {
        if (!isRecorded(actor)) return;
        sub.unsubscribe();
        resolve(snapshotOf(actor));
      },
      complete: () =>
        isRecorded(actor)
          ? resolve(snapshotOf(actor))
          : reject(new RuntimeStopped({ message: "job supervision stopped before the job ended" })),
    });
  });

const throttledSubscribe = (actor: Actor<JobMachine>, listener: (s: JobSnapshot) => void) => {
  // A job already over: its actor stops (or has stopped) and will not emit again, so a
  // subscriber that came late would never hear of the end. Hand it over once, asynchronously
  // like every other update.
  if (isRecorded(actor) || actor.getSnapshot().status !== "active") {
    let cancelled = false;
    queueMicrotask(() => {
      if (!cancelled) listener(snapshotOf(actor));
    });
    return () => {
      cancelled = true;
    };
  }
  const gap = 1000 / maxUpdatesPerSecond;
  let lastAt = 0;
  let lastKey = "";
  let timer: NodeJS.Timeout | undefined;
  const emit = () => {
    timer = undefined;
    lastAt = Date.now();
    const s = snapshotOf(actor);
    const key = `${s.status}/${s.done}/${s.failed}/${s.dead}/${s.etaMs}`;
    if (key === lastKey) return;
    lastKey = key;
    listener(s);
  };
  const sub = actor.subscribe(() => {
    if (isRecorded(actor)) {
      clearTimeout(timer);
      return emit();
    }
    if (timer) return;
    const wait = gap - (Date.now() - lastAt);
    if (wait <= 0) emit();
    else timer = setTimeout(emit, wait);
  });
  return () => {
    clearTimeout(timer);
    sub.unsubscribe();
  };
};

/**
 * Reads the job's results stream from the start and yields each task's
 * answer once. Successes are final and stream out as they are read; failures
 * are held until the job is over, because a redrive may still replace a dead
 * task's answer (its marker drops the old one).
 */
async function* readAllResults<Result>(
  core: RuntimeCore,
  broker: Pick<JobResults, "readResults">,
  actor: Actor<JobMachine>,
): AsyncIterable<TaskResult<Result>> {
  const { jobId, queue } = actor.getSnapshot().context;
  const seen = new Set<number>();
  const ready: TaskResult<Result>[] = [];
  const failures = new Map<number, TaskResult<Result>>();
  let wake: (() => void) | undefined;
  // Aborted as the runtime stops, or as this reader ends (an `AbortSignal.any` with the
  // runtime's stop left a weak reference in it for good, one per call).
  const ac = core.stopLinks.link();
  let caughtUp = false;
  const loop = broker
    .readResults(
      queue,
      jobId,
      (body, pending) => {
        let entries: ResultRecord[];
        try {
          entries = decodeResults(body);
        } catch (error) {
          // Not written by jetstate: nothing to read in it (the job's counts skip it too).
          core.logger.warn({ err: error, jobId }, "results message skipped");
          entries = [];
        }
        for (const raw of entries) {
          const i = raw.i;
          if (raw.redrive) {
            if (failures.delete(i)) seen.delete(i);
            continue;
          }
          if (seen.has(i)) continue;
          seen.add(i);
          const taskId = `${jobId}.${i}`;
          if (raw.ok) ready.push({ taskId, index: i, ok: true, result: raw.r as Result });
          else
            failures.set(i, {
              taskId,
              index: i,
              ok: false,
              error: raw.e ?? "failed",
              dead: raw.dead === true,
            });
        }
        caughtUp = pending === 0;
        wake?.();
      },
      ac.signal,
      () => {
        caughtUp = true;
        wake?.();
      },
    )
    .catch((error) => core.logger.warn({ err: error, jobId }, "results reader failed"));
  const onChange = actor.subscribe({ next: () => wake?.(), complete: () => wake?.() });
  // A job over before this reader started had every answer stored by then: once the reader has
  // read what the stream holds, nothing more comes. Answers aged out of the stream (its
  // retention) while the record still counts them were waited for, for good.
  const overBefore = isRecorded(actor);
  let yielded = 0;
  try {
    for (;;) {
      for (let next = ready.shift(); next !== undefined; next = ready.shift()) {
        yielded++;
        yield next;
      }
      const c = actor.getSnapshot().context;
      const over = isRecorded(actor) || actor.getSnapshot().status === "stopped";
      if (over && caughtUp) {
        for (const failure of [...failures.values()].sort((a, b) => a.index - b.index)) {
          yielded++;
          yield failure;
        }
        failures.clear();
        if (yielded >= c.done + c.failed + c.dead || !isRecorded(actor) || overBefore) return;
      }
      if (core.stopping.aborted) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = undefined;
    }
  } finally {
    onChange.unsubscribe();
    ac.abort(workOver);
    core.stopLinks.unlink(ac);
    await loop;
  }
}

/** The actor of a job and how to hand it a record read from the server. */
export interface HandleSource {
  readonly actor: Actor<JobMachine>;
  onRecord(record: JobRecord): void;
  /** The results messages the job's actor kept, every one from the first (undefined: not kept). */
  keptResults?(): readonly string[] | undefined;
}

/**
 * Every task's answer from what the job's own actor kept, when the job
 * succeeded whole (every answer a success, final: no redrive can change
 * them) and the actor kept every message its feed handed; undefined: read
 * the stream. A small job's `results()` after `done()` made two reads of the
 * server, then a reader of the kept messages as of the stream's (a signal
 * joined with the runtime's stop, a subscription to the actor) to yield one
 * answer.
 */
const keptAnswers = <Result>(source: HandleSource): TaskResult<Result>[] | undefined => {
  const { actor } = source;
  const s = snapshotOf(actor);
  const kept = source.keptResults?.();
  if (!kept || !isRecorded(actor) || s.status !== "succeeded" || s.done !== s.total) return undefined;
  const answers: TaskResult<Result>[] = [];
  const seen = new Set<number>();
  try {
    for (const body of kept)
      for (const r of decodeResults(body)) {
        if (!r.ok || r.redrive || seen.has(r.i)) continue;
        seen.add(r.i);
        answers.push({ taskId: `${s.id}.${r.i}`, index: r.i, ok: true, result: r.r as Result });
      }
  } catch {
    return undefined; // a message not jetstate's: the stream's reader skips it with a warning
  }
  // Every task's success among them: an actor that learned the end from another runtime's record
  // may not have read every answer yet (its counts are the record's).
  return answers.length === s.total ? answers : undefined;
};

async function* yieldAll<T>(items: readonly T[]): AsyncIterable<T> {
  yield* items;
}

/**
 * Cancels from any runtime: while this runtime is still submitting the job
 * its actor rolls the submit back; otherwise the record is ended with a
 * compare-and-set (counts kept), tasks purged and consumer deleted, and every
 * runtime's actor for the job, its supervisor's included, sees the end in its
 * record watch.
 */
const cancel = async (core: RuntimeCore, broker: JobPort, source: HandleSource, reason: string) => {
  const { actor } = source;
  const snapshot = actor.getSnapshot();
  if (snapshot.status === "active" && snapshot.matches({ queuing: "submitting" })) {
    actor.send({ type: "job.cancel", reason });
    return whenRecorded(actor);
  }
  if (!isRecorded(actor)) {
    const s = snapshotOf(actor);
    const stored = await cancelJob(broker, s.id, reason, s, core.clock.now());
    if (stored && isFinal(stored.status)) source.onRecord(stored);
    else actor.send({ type: "job.cancel", reason });
  }
  return whenRecorded(actor);
};

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
  readonly #core: RuntimeCore;
  readonly #broker: JobPort & JobResults;
  readonly #source: HandleSource;

  constructor(core: RuntimeCore, broker: JobPort & JobResults, source: HandleSource) {
    const { jobId, queue } = source.actor.getSnapshot().context;
    this.id = jobId;
    this.queue = queue;
    this.#core = core;
    this.#broker = broker;
    this.#source = source;
  }

  /** The actor behind a handle: for tests only (`jobActorOf`), never on the handle itself. */
  static actorOf(handle: RuntimeJobHandle): Actor<JobMachine> {
    return handle.#source.actor;
  }

  get snapshot(): () => JobSnapshot {
    return () => snapshotOf(this.#source.actor);
  }

  get subscribe(): (listener: (snapshot: JobSnapshot) => void) => () => void {
    return (listener) => throttledSubscribe(this.#source.actor, listener);
  }

  get done(): () => Promise<JobSnapshot> {
    return () => whenRecorded(this.#source.actor);
  }

  get cancel(): (reason: string) => Promise<JobSnapshot> {
    return (reason) => cancel(this.#core, this.#broker, this.#source, reason);
  }

  get results(): <Result>() => AsyncIterable<TaskResult<Result>> {
    return <Result>() => {
      const kept = keptAnswers<Result>(this.#source);
      return kept ? yieldAll(kept) : readAllResults<Result>(this.#core, this.#broker, this.#source.actor);
    };
  }

  get onProgress(): (listener: (progress: TaskProgress) => void) => () => void {
    return (listener) => watchNotes(this.#core, this.#broker, this, listener);
  }
}

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

export const makeHandle = (
  core: RuntimeCore,
  broker: JobPort & JobResults,
  source: HandleSource,
): JobHandle => new RuntimeJobHandle(core, broker, source);
