import { Duration, Effect } from "effect";
import { type JetstateError, RevisionConflict } from "../kernel/errors.ts";

/**
 * What a port call (or a test hook) fails with: a tagged jetstate error, or
 * any other error (a bug, a test's `SimulatedCrash`), passed on unchanged.
 */
export type PortFailure = JetstateError | Error;

/**
 * A port call as an Effect. Its rejection (or a synchronous throw) stays the
 * failure as it is, so the promise wrappers reject with that very instance
 * and `instanceof` checks upstream keep working.
 */
export const fromPort = <A>(call: () => PromiseLike<A> | A): Effect.Effect<A, PortFailure> =>
  Effect.tryPromise({ try: async () => call(), catch: (error) => error as PortFailure });

/** A synchronous step that may throw (e.g. a check raising a tagged error), as a failure. */
export const fromThrowing = <A>(step: () => A): Effect.Effect<A, PortFailure> =>
  Effect.try({ try: step, catch: (error) => error as PortFailure });

export const isConflict = (error: unknown): error is RevisionConflict => error instanceof RevisionConflict;

/** Resolves when `signal` aborts (at once if it already has). */
const aborted = (signal: AbortSignal): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    if (signal.aborted) return resume(Effect.void);
    const onAbort = () => resume(Effect.void);
    signal.addEventListener("abort", onAbort, { once: true });
    return Effect.sync(() => signal.removeEventListener("abort", onAbort));
  });

/**
 * Waits `ms`, cut short when `signal` aborts, and then fails with the
 * signal's reason. Only this wait listens to the signal: interrupting the
 * whole program instead would abandon a port call half done (a record
 * created but never rolled back).
 */
export const pauseUnlessAborted = (ms: number, signal: AbortSignal): Effect.Effect<void, PortFailure> =>
  Effect.race(Effect.sleep(Duration.millis(ms)), aborted(signal)).pipe(
    Effect.andThen(() => (signal.aborted ? Effect.fail(signal.reason as PortFailure) : Effect.void)),
  );
