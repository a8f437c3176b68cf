import { setMaxListeners } from "node:events";
import { Effect, Exit, Schedule, Scope } from "effect";
import { workOver } from "../kernel/errors.ts";
import type { Logger } from "../kernel/logger.ts";

/**
 * A promise-returning function as an effect whose interruption waits for the
 * promise to settle: on interrupt, `signal` aborts and the fiber ends only
 * once the function has returned. (`Effect.tryPromise` lets go at once, which
 * would let `stop()` return while a loop still runs.)
 */
export const untilSettled = <A>(
  run: (signal: AbortSignal) => Promise<A>,
  controller = new AbortController(),
): Effect.Effect<A, unknown> =>
  Effect.callback<A, unknown>((resume) => {
    const running = run(controller.signal);
    running.then(
      (value) => resume(Effect.succeed(value)),
      (error: unknown) => resume(Effect.fail(error)),
    );
    return Effect.promise(async () => {
      controller.abort(workOver);
      // Its failure after the abort is the interruption's, not news: the fiber is ending anyway.
      await running.catch(() => undefined);
    });
  });

/**
 * The runtime's background loops (record watch, reaper, takeover, dead
 * letters, cleanup, a worker's pull loops) as fibers of one Effect `Scope`.
 * Each loop listens to `signal`; `close()` aborts it, interrupts every fiber
 * and resolves only once every loop has ended: after `rt.stop()` no loop body
 * runs again and no timer of theirs is pending.
 */
export class LoopGroup {
  readonly #controller = new AbortController();
  // Parallel: each loop is interrupted at once, not after the ones started later have ended.
  // A periodic loop ends only when interrupted: behind a loop waiting for the server it would
  // run its passes on, and be named among the loops still running.
  readonly #scope = Effect.runSync(Scope.make("parallel"));
  readonly #log: Logger;
  /** Names of the loops running now, for the log line of a stop that waits too long. */
  readonly #running = new Map<string, number>();
  /** Work started elsewhere that `close()` waits for (`track`). */
  readonly #tracked = new Set<Promise<unknown>>();
  #closed: Promise<void> | undefined;

  constructor(log: Logger) {
    this.#log = log;
    // Every loop and every operation in flight listens to it: many listeners, no leak.
    setMaxListeners(0, this.#controller.signal);
  }

  /** Aborted by `close()`: every loop and operation of the group listens to it. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /**
   * Runs `loop` until it returns or the group closes (then its signal aborts
   * and `close()` waits for it). A loop that throws is logged (it is not
   * started again: loops that must survive failures run under `superviseLoop`).
   */
  run(name: string, loop: (signal: AbortSignal) => Promise<unknown>): void {
    this.#fork(
      name,
      untilSettled(() => loop(this.signal)).pipe(
        Effect.catch((error) =>
          Effect.sync(() => {
            if (!this.signal.aborted) this.#log.warn({ loop: name, err: error }, "loop failed");
          }),
        ),
      ),
    );
  }

  /**
   * Runs `pass` every `everyMs` (the pause counted from the end of the last
   * pass), first at once or after one pause. A failed pass is logged and the
   * next one runs on time.
   */
  every(name: string, everyMs: number, pass: () => Promise<void>, first: "now" | "later" = "now"): void {
    const once = untilSettled(pass).pipe(
      Effect.catch((error) =>
        Effect.sync(() => {
          if (!this.signal.aborted) this.#log.debug({ loop: name, err: error }, "periodic pass failed");
        }),
      ),
    );
    const repeated = once.pipe(Effect.repeat(Schedule.spaced(`${everyMs} millis`)));
    this.#fork(
      name,
      first === "now" ? repeated : Effect.andThen(Effect.sleep(`${everyMs} millis`), repeated),
    );
  }

  /**
   * `run` for the work of one job (its results reading, a progress write, its
   * lease's release): called at once unless the group is closed, `close()`
   * waits for it as for a loop, and a rejection is logged as a loop's, but
   * it gets no fiber. A fiber in the group's scope
   * (its finalizer, its run loop, the interruption's controller) was 4.6 KB of
   * heap for every live job, for a promise that only needed waiting for. The
   * work listens to the group's `signal` through its job's own.
   */
  track(name: string, work: () => Promise<unknown>): void {
    if (this.signal.aborted) return;
    this.#started(name);
    let started: Promise<unknown>;
    try {
      started = work();
    } catch (error) {
      started = Promise.reject(error); // a bug: logged like a failed loop
    }
    const settled = started
      .catch((error: unknown) => {
        if (!this.signal.aborted) this.#log.warn({ loop: name, err: error }, "loop failed");
      })
      .finally(() => {
        this.#tracked.delete(settled);
        this.#ended(name);
      });
    this.#tracked.add(settled);
  }

  #started(name: string): void {
    this.#running.set(name, (this.#running.get(name) ?? 0) + 1);
  }

  #ended(name: string): void {
    const left = (this.#running.get(name) ?? 1) - 1;
    if (left > 0) this.#running.set(name, left);
    else this.#running.delete(name);
  }

  #fork(name: string, loop: Effect.Effect<unknown>): void {
    if (this.signal.aborted) return;
    this.#started(name);
    const counted = Effect.ensuring(
      loop,
      Effect.sync(() => this.#ended(name)),
    );
    // Started at once, as a plain call would be: a close() right after still finds it running.
    Effect.runFork(Effect.forkIn(counted, this.#scope, { startImmediately: true }));
  }

  /** The loops running now, by name. */
  running(): string[] {
    return [...this.#running.keys()];
  }

  /** Aborts the signal, interrupts every loop and resolves once all have ended. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#controller.abort();
      await Promise.all([Effect.runPromise(Scope.close(this.#scope, Exit.void)), ...this.#tracked]);
    })();
    return this.#closed;
  }

  /**
   * `close()`, waited for at most `waitMs`, or until `stopWaiting` settles:
   * true once every loop has ended, false when some still run then
   * (`running()` names them).
   */
  closeWithin(waitMs: number, stopWaiting?: Promise<unknown>): Promise<boolean> {
    return settlesWithin(this.close(), waitMs, stopWaiting);
  }
}

/**
 * True once `work` has settled, false when `waitMs` passed first or
 * `stopWaiting` settled first; no timer is left either way.
 */
export const settlesWithin = async (
  work: Promise<unknown>,
  waitMs: number,
  stopWaiting?: Promise<unknown>,
): Promise<boolean> => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), waitMs);
  });
  const given = stopWaiting?.then(
    () => false as const,
    () => false as const,
  );
  const settled = work.then(
    () => true as const,
    () => true as const,
  );
  try {
    return await Promise.race([settled, late, ...(given ? [given] : [])]);
  } finally {
    clearTimeout(timer);
  }
};
