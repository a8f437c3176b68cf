import { inTaskSpan, untraced } from "./tracing.ts";
import type { Task, TaskContext } from "./worker-options.ts";

/**
 * What a runtime's workers tell whoever measures them (`createMetrics`):
 * one typed listener point on the runtime's core. Emitters check `active`
 * before they build an event, so with nobody listening a task costs one
 * property read per point.
 */
export type TelemetryEvent =
  /** A delivery after the first started its handler. */
  | { readonly type: "task.redelivered"; readonly queue: string; readonly attempt: number }
  /** A handler returned or threw (hung and late ones too, when they end). */
  | { readonly type: "task.ran"; readonly queue: string; readonly seconds: number; readonly ok: boolean }
  /** A task's answer was stored and its delivery acked (done) or termed (failed, dead). */
  | { readonly type: "task.answered"; readonly queue: string; readonly outcome: TaskAnswer };

type TaskAnswer = "done" | "failed" | "dead";

export class Telemetry {
  readonly #listeners = new Set<(event: TelemetryEvent) => void>();

  get active(): boolean {
    return this.#listeners.size > 0;
  }

  emit(event: TelemetryEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // A listener's bug must not fail a task's answer.
      }
    }
  }

  /** Returns the unsubscribe function. */
  listen(listener: (event: TelemetryEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}

/**
 * A worker's handler as the worker calls it: in a `jetstate.task` span, and
 * timed for the listeners (`task.ran`) when there are any. The redelivery
 * is told before the handler starts.
 */
export const observedHandler = <Payload, Result>(
  handler: (task: Task<Payload>, ctx: TaskContext) => Promise<Result> | Result,
  queue: string,
  telemetry: Telemetry,
): ((task: Task<Payload>, ctx: TaskContext) => Promise<Result>) => {
  // The handler's own promise when it returns one (a wrapper of an async function would adopt it,
  // a promise and two turns more a task); a value or a throw made a promise.
  const run = (task: Task<Payload>, ctx: TaskContext): Promise<Result> => {
    try {
      const result = handler(task, ctx);
      return result instanceof Promise ? result : Promise.resolve(result);
    } catch (error) {
      return Promise.reject(error);
    }
  };
  return (task, ctx) => {
    // Neither listened to nor traced (most workers): the handler alone, nothing made around it.
    if (!telemetry.active && untraced()) return run(task, ctx);
    const traced = () => inTaskSpan(queue, task.jobId, task.index, task.attempt, () => run(task, ctx));
    if (!telemetry.active) return traced();
    if (task.attempt > 1) telemetry.emit({ type: "task.redelivered", queue, attempt: task.attempt });
    const started = performance.now();
    const ran = (ok: boolean) =>
      telemetry.emit({ type: "task.ran", queue, seconds: (performance.now() - started) / 1000, ok });
    return traced().then(
      (result) => {
        ran(true);
        return result;
      },
      (error: unknown) => {
        ran(false);
        throw error;
      },
    );
  };
};
