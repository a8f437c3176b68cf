import { Duration, Effect, Schedule } from "effect";
import { untilSettled } from "./loop-group.ts";

/**
 * The one way jetstate waits between two tries of the same thing: an
 * operation retried after a transient error (`runOperation`), a loop started
 * again after it ended (`superviseLoop`). Exponential from `initialMs`, capped
 * at `maxMs`, optionally jittered (±20 %, Effect's `Schedule.jittered`) so that
 * many runtimes hit by the same outage do not come back in step.
 *
 * The connection actor's whole-client backoff stays in its statechart (its
 * delays are state-machine timers, shown to the inspector); it computes them
 * with `backoffDelay` in `src/machines/connection.machine.ts`.
 */
export interface Backoff {
  /** The first pause. */
  readonly initialMs: number;
  /** Each next pause is the last one times this (default 2). */
  readonly factor?: number;
  /** Longest pause (default: no cap). */
  readonly maxMs?: number;
  /** Spread each pause over ±20 % (default off: today's pauses are exact, and tests pin them). */
  readonly jitter?: boolean;
}

/** The pauses of `backoff` as an Effect schedule: initialMs, initialMs·factor, … up to maxMs. */
export const backoffSchedule = (backoff: Backoff): Schedule.Schedule<Duration.Duration> => {
  const growing = Schedule.exponential(Duration.millis(backoff.initialMs), backoff.factor ?? 2);
  const maxMs = backoff.maxMs;
  const capped =
    maxMs === undefined
      ? growing
      : growing.pipe(
          Schedule.modifyDelay(({ duration }) =>
            Effect.succeed(Duration.min(duration, Duration.millis(maxMs))),
          ),
        );
  return backoff.jitter ? Schedule.jittered(capped) : capped;
};

export interface RetryPolicy {
  /** Total attempts, the first included (default 3). */
  readonly attempts: number;
  /** First retry delay; each next one doubles (default 500 ms → 0.5 s, 1 s). */
  readonly initialDelayMs: number;
  /** Longest pause between two attempts (default: no cap), for retries bounded by the deadline. */
  readonly maxDelayMs?: number;
}

export const defaultRetry: RetryPolicy = { attempts: 3, initialDelayMs: 500 };

/**
 * Retries `effect` while `retryable(error)`, pausing as `policy` says, at most
 * `policy.attempts` calls in all (0 and 1 both mean one call).
 */
export const retryWith =
  <E>(policy: RetryPolicy, retryable: (error: E) => boolean) =>
  <A, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    effect.pipe(
      Effect.retry({
        schedule: backoffSchedule({
          initialMs: policy.initialDelayMs,
          ...(policy.maxDelayMs === undefined ? {} : { maxMs: policy.maxDelayMs }),
        }),
        times: Math.max(0, policy.attempts - 1),
        while: retryable,
      }),
    );

/**
 * Calls `attempt` until it resolves or fails for good (`retryable` says no),
 * pausing as `backoff` says after each failure (each told to `onFailure`,
 * with whether it is tried again). Once `signal` aborts, the attempt's own
 * signal aborts and this resolves when the attempt has settled: nothing of
 * it runs on after.
 */
export const untilDone = async (
  attempt: (signal: AbortSignal) => Promise<void>,
  backoff: Backoff,
  signal: AbortSignal,
  retryable: (error: unknown) => boolean,
  onFailure: (error: unknown, again: boolean) => void,
): Promise<void> => {
  const again = (error: unknown) => !signal.aborted && retryable(error);
  const tried = untilSettled(attempt).pipe(
    Effect.tapError((error) => Effect.sync(() => signal.aborted || onFailure(error, again(error)))),
    Effect.retry({ schedule: backoffSchedule(backoff), while: again }),
  );
  await Effect.runPromise(tried, { signal }).catch(() => undefined);
};

/**
 * `attempt` once as a plain call (the try that succeeds, nearly every one, makes no Effect
 * program), then, after a failure `retryable` says a later try may mend, as `untilDone` does:
 * awaited here, or handed to `later` (this then settles after the first try). Every failure is
 * told to `onFailure`, with whether it is tried again; none once `signal` has aborted.
 */
export const plainThenUntilDone = (
  attempt: (signal: AbortSignal) => Promise<void>,
  backoff: Backoff,
  signal: AbortSignal,
  retryable: (error: unknown) => boolean,
  onFailure: (error: unknown, again: boolean) => void,
  later?: (tries: () => Promise<void>) => void,
): Promise<void> =>
  attempt(signal).catch(async (error: unknown) => {
    if (signal.aborted) return;
    const again = retryable(error);
    onFailure(error, again);
    if (!again) return;
    const tries = () => untilDone(attempt, backoff, signal, retryable, onFailure);
    if (later) later(tries);
    else await tries();
  });
