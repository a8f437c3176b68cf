import type { Actor } from "xstate";
import type { JobResults } from "../adapters/job-results.ts";
import { workOver } from "../kernel/errors.ts";
import { othersAhead, takenAhead, takesBack } from "../kernel/job-progress.ts";
import { answersOfSubmit, decodeResults, type ResultRecord } from "../kernel/result-wire.ts";
import type { JobMachine } from "../machines/job.machine.ts";
import {
  type HandleSource,
  isRecorded,
  type JobSnapshot,
  snapshotOf,
  type TaskResult,
} from "./job-handle.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/**
 * Reads the job's results stream from the start and yields each task's
 * answer once (of `submitId`'s job: an answer naming another submit of its
 * key is not, `answersOfSubmit`). Successes are final and stream out as they are read; failures
 * are held until the job is over, because a redrive may still replace a dead
 * task's answer (its marker drops the old one).
 */
export async function* readAllResults<Result>(
  core: RuntimeCore,
  broker: Pick<JobResults, "readResults">,
  actor: Actor<JobMachine>,
  submitId?: string,
  /** The record's end, for an actor stopped as another runtime took the job over (`steppedDown`). */
  watched?: () => { readonly known?: JobSnapshot; readonly end: Promise<JobSnapshot> } | undefined,
): AsyncIterable<TaskResult<Result>> {
  const { jobId, queue } = actor.getSnapshot().context;
  const seen = new Set<number>();
  const ready: TaskResult<Result>[] = [];
  const failures = new Map<number, TaskResult<Result>>();
  /** The letter each held failure names (a dead answer's, kernel/wire.ts). */
  const letters = new Map<number, number>();
  /** The letters markers sent back while their task had no answer read (`takenAhead`). */
  const ahead = new Map<number, number[]>();
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
          entries = answersOfSubmit(decodeResults(body), submitId);
        } catch (error) {
          // Not written by jetstate: nothing to read in it (the job's counts skip it too).
          core.logger.warn({ err: error, jobId }, "results message skipped");
          entries = [];
        }
        for (const raw of entries) {
          const i = raw.i;
          if (raw.redrive) {
            // As the job counts it: a marker takes back a dead answer whose letter it names.
            // A death only, as the job counts: a failure for good stands (a marker naming no letter
            // took it back here, and the task went missing from what this read lists; a review).
            const letter = letters.get(i);
            const held = failures.get(i);
            if (held && !held.ok && held.dead && takesBack(raw, letter)) {
              const others = othersAhead(raw, letter);
              if (others.length > 0) ahead.set(i, [...(ahead.get(i) ?? []), ...others]);
              failures.delete(i);
              letters.delete(i);
              seen.delete(i);
            } else if (!seen.has(i) && raw.l !== undefined) ahead.set(i, [...(ahead.get(i) ?? []), ...raw.l]);
            continue;
          }
          if (seen.has(i) || takenAhead(ahead.get(i), raw)) continue;
          seen.add(i);
          const taskId = `${jobId}.${i}`;
          if (raw.ok) ready.push({ taskId, index: i, ok: true, result: raw.r as Result });
          else {
            if (raw.l !== undefined) letters.set(i, raw.l);
            failures.set(i, {
              taskId,
              index: i,
              ok: false,
              error: raw.e ?? "failed",
              dead: raw.dead === true,
            });
          }
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
    .catch((error) => core.logger.warn({ err: error, jobId }, "results reader failed"))
    // Its end wakes the wait below: the runtime stopped (it aborts `ac`) while the reader had
    // not caught up, and no change of the actor (stopped already, or never stopped) would.
    .finally(() => wake?.());
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
      // Its actor stopped as another runtime took the job over: over once the record's end is
      // read, its counts the end's, as a watcher's actor adopts it.
      const wait = isRecorded(actor) ? undefined : watched?.();
      const c = wait?.known ?? actor.getSnapshot().context;
      const over = wait
        ? wait.known !== undefined
        : isRecorded(actor) || actor.getSnapshot().status === "stopped";
      if (over && caughtUp) {
        for (const failure of [...failures.values()].sort((a, b) => a.index - b.index)) {
          yielded++;
          yield failure;
        }
        failures.clear();
        if (yielded >= c.done + c.failed + c.dead || !(wait || isRecorded(actor)) || overBefore) return;
      }
      if (core.stopping.aborted) return;
      if (wait && !over)
        void wait.end.then(
          () => wake?.(),
          () => wake?.(),
        );
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

/**
 * Every task's answer from what the job's own actor kept, when the job
 * succeeded whole (every answer a success, final: no redrive can change
 * them) and the actor kept every message its feed handed; undefined: read
 * the stream. A small job's `results()` after `done()` made two reads of the
 * server, then a reader of the kept messages as of the stream's (a signal
 * joined with the runtime's stop, a subscription to the actor) to yield one
 * answer.
 */
export const keptAnswers = <Result>(source: HandleSource): TaskResult<Result>[] | undefined => {
  const { actor } = source;
  const s = snapshotOf(actor);
  const kept = source.keptResults?.();
  if (!kept || !isRecorded(actor) || s.status !== "succeeded" || s.done !== s.total) return undefined;
  const answers: TaskResult<Result>[] = [];
  const seen = new Set<number>();
  try {
    for (const body of kept)
      for (const r of answersOfSubmit(decodeResults(body), source.submitId)) {
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

export async function* yieldAll<T>(items: readonly T[]): AsyncIterable<T> {
  yield* items;
}
