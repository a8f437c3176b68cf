import type { Actor } from "xstate";
import { RuntimeStopped } from "../kernel/errors.ts";
import { type JobRecord, type JobStatus, priorityOf } from "../kernel/job-record.ts";
import type { TaskProgress } from "../kernel/wire.ts";
import type { JobMachine } from "../machines/job.machine.ts";
import { isRecordedValue, jobStatusOf } from "../machines/job-state.ts";

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
  /**
   * The job as this handle knows it. Its status is `succeeded` or `failed` only once that end
   * is recorded: while its supervisor writes it, the job shows its last status before it.
   */
  snapshot(): JobSnapshot;
  /**
   * Live state at a bounded rate (≤ 10 per second). The end arrives once, as recorded (never
   * an end decided and then replaced by another: a cancel from another process that won).
   */
  subscribe(listener: (snapshot: JobSnapshot) => void): () => void;
  /**
   * Resolves on `succeeded` or `failed` with the final snapshot (it does not reject for a failed
   * job); rejects with `RuntimeStopped` if the runtime stops before the job ended.
   */
  done(): Promise<JobSnapshot>;
  /** Every task's result once, as stored (a redelivered task appears once). */
  results(): AsyncIterable<TaskResult<Result>>;
  /**
   * Progress notes of the job's tasks (`ctx.progress(info)` in a handler),
   * from now on, until the returned function is called or the runtime stops.
   * Best effort: never stored, so notes sent while nobody listened are gone.
   * @example
   * const stop = job.onProgress(({ index, info }) => log.info({ index, info }, "task progress"));
   */
  onProgress(listener: (progress: TaskProgress) => void): () => void;
  /**
   * Ends the job as `failed` with the reason: remaining tasks purged, consumer deleted.
   * A reason that is not a string is an `InvalidArgument` (`reason`), and nothing is written.
   * The record keeps `cancelled: <reason>` cut to 256 bytes (`… [cut from N characters]`).
   */
  cancel(reason: string): Promise<JobSnapshot>;
}

const maxUpdatesPerSecond = 10;

export const snapshotOf = (actor: Actor<JobMachine>): JobSnapshot => {
  const { value, context: c } = actor.getSnapshot();
  return {
    id: c.jobId,
    queue: c.queue,
    status: jobStatusOf(value),
    total: c.total,
    // Never below the record: its results may not have been replayed here yet.
    done: Math.max(c.done, c.recorded.done),
    failed: Math.max(c.failed, c.recorded.failed),
    dead: Math.max(c.dead, c.recorded.dead),
    throughput: Math.round(c.throughput * 10) / 10,
    etaMs: c.etaMs,
    reason: c.reason,
    priority: priorityOf(c.settings),
    // Wall-clock times: the job's own are on the runtime's steady clock, behind the wall clock
    // by what it was stepped by (the job's clock does not read a step as time gone by).
    startedAt: c.startedAt + c.wallAhead,
    lastProgressAt: c.lastProgressAt + c.wallAhead,
    ...(c.runAt === null ? {} : { runAt: c.runAt }),
  };
};

export const isRecorded = (actor: Actor<JobMachine>): boolean => isRecordedValue(actor.getSnapshot().value);

/** Resolves with the final snapshot; rejects with `RuntimeStopped` if supervision stops first. */
export const whenRecorded = (actor: Actor<JobMachine>): Promise<JobSnapshot> =>
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

/** The job as a handle shows it, for `throttledSubscribe`. */
export interface HandleView {
  /** Never an end decided and not written: the job is not over until its record says so. */
  shown(): JobSnapshot;
  /**
   * The job's end once its actor has ended: the one it recorded (at once), or the record's when
   * it could not write its own (once read).
   */
  ended(): JobSnapshot | Promise<JobSnapshot>;
}

export const throttledSubscribe = (
  actor: Actor<JobMachine>,
  listener: (s: JobSnapshot) => void,
  view: HandleView,
) => {
  let cancelled = false;
  let over = false;
  // Handed once: as the actor records it (before its `done()` resolves, so a subscriber that
  // unsubscribes once `done()` resolved has heard it), or once it is read from the record. A
  // runtime stopped first hands what the handle shows then. The listener is called outside a
  // promise's callbacks: one that throws is an uncaught exception, as from any other update,
  // not a rejection nobody handles.
  const handEnd = (late: boolean) => {
    if (over) return;
    over = true;
    const end = view.ended();
    if (!(end instanceof Promise)) {
      if (late) queueMicrotask(() => cancelled || listener(end));
      else listener(end);
      return;
    }
    end.then(
      (known) => queueMicrotask(() => cancelled || listener(known)),
      () => queueMicrotask(() => cancelled || listener(view.shown())),
    );
  };
  // A job already over: its actor stops (or has stopped) and will not emit again, so a
  // subscriber that came late would never hear of the end: handed asynchronously, like every
  // other update.
  if (isRecorded(actor) || actor.getSnapshot().status !== "active") {
    handEnd(true);
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
    const s = view.shown();
    const key = `${s.status}/${s.done}/${s.failed}/${s.dead}/${s.etaMs}`;
    if (key === lastKey) return;
    lastKey = key;
    listener(s);
  };
  const sub = actor.subscribe({
    next: () => {
      if (isRecorded(actor)) {
        clearTimeout(timer);
        return handEnd(false);
      }
      if (timer) return;
      const wait = gap - (Date.now() - lastAt);
      if (wait <= 0) emit();
      else timer = setTimeout(emit, wait);
    },
    // Stopped before its end (its runtime stops): XState tells observers by `complete` only.
    complete: () => {
      clearTimeout(timer);
      handEnd(true);
    },
  });
  return () => {
    cancelled = true;
    clearTimeout(timer);
    sub.unsubscribe();
  };
};

/** The actor of a job and how to hand it a record read from the server. */
export interface HandleSource {
  readonly actor: Actor<JobMachine>;
  /** The job's submit: a cancel writes nothing onto a record another submit of its key made again. */
  readonly submitId?: string;
  onRecord(record: JobRecord, revision: number): void;
  /** The results messages the job's actor kept, every one from the first (undefined: not kept). */
  keptResults?(): readonly string[] | undefined;
  /** Once the job's actor has counted the answers stored when it started reading, or after `waitMs`. */
  whenCaughtUp?(waitMs: number): Promise<void>;
  /** Why the end the actor decided was not written (undefined: it was, or none was decided). */
  finalizeError?(): unknown;
  /** The job's last status before an end was decided (what it is until that end is written). */
  liveStatus?(): JobStatus;
  /**
   * Its actor stopped as another runtime took the job over (`Deposed`): the job goes on, and its
   * end is the record's, as for a runtime that only watches it.
   */
  steppedDown?(): boolean;
}
