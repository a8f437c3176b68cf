import { Effect } from "effect";
import {
  type BrokerError,
  ConnectionUnavailable,
  isTransient,
  OperationTimeout,
  RuntimeStopped,
} from "../kernel/errors.ts";
import { defaultRetry, type RetryPolicy, retryWith } from "./retry.ts";

/**
 * What an operation needs from the connection actor: the current client once
 * it is `connected`. The runtime implements it; tests fake it.
 */
export interface ConnectionPort<C> {
  /**
   * Resolves with the client as soon as the connection is `connected`
   * (at once if it already is). Rejects with `RuntimeStopped` when the
   * runtime stops, and when `signal` aborts.
   */
  whenConnected(signal: AbortSignal): Promise<C>;
  /** The client, if the connection is `connected` right now: the first attempt then starts at once. */
  current?(): C | undefined;
  /**
   * What the failure of `operation` on `client` is, before it is classified (or a loop logs
   * it): the connection may know more than the error (its server has no JetStream).
   */
  explain?(client: C, error: unknown, operation: string): unknown;
}

export type { RetryPolicy } from "./retry.ts";

export interface OperationOptions {
  /** For errors and logs, e.g. `publish`, `kv.update`. */
  readonly name: string;
  /** Deadline for the whole operation: waiting, every attempt and the pauses between. */
  readonly timeoutMs: number;
  readonly retry?: RetryPolicy;
  readonly signal?: AbortSignal;
  /**
   * `signal` is shared by every operation (the runtime's stop): the Effect
   * program listens on a signal of its own linked to it (`AbortSignal.any`
   * adds no listener), never on it. Node's `addEventListener` walks the
   * listeners already there; with thousands of operations in flight (the
   * lease renewals of 5,000 live jobs) that was 10 % of the runtime's CPU
   * (test/unit/runtime-core-signal.test.ts). The first attempt adds none.
   */
  readonly sharedSignal?: boolean;
  /**
   * Counts the operation's calls of `op` until each settles, past the
   * operation's own end: one let go of (a retry interrupted by the stop's
   * abort, a first attempt past its deadline) still runs. The runtime's
   * stop waits for them before it drains the connection.
   */
  readonly inFlight?: OperationsInFlight;
}

/**
 * Calls of operations (`OperationOptions.inFlight`) that have not settled:
 * a bucket scan let go of at the stop's abort deletes its consumer at its
 * end, and failed to once the connection drained under it, leaving the
 * consumer on the server. Counted in the handlers the first attempt has
 * anyway: no promise nor closure more per operation on the hot path.
 */
export class OperationsInFlight {
  #count = 0;
  #idle: Array<() => void> = [];

  get count(): number {
    return this.#count;
  }

  started(): void {
    this.#count++;
  }

  ended(): void {
    if (--this.#count > 0) return;
    for (const wake of this.#idle.splice(0)) wake();
  }

  /** Resolves once no call is in flight (at once if none is now). */
  idle(): Promise<void> {
    return this.#count === 0 ? Promise.resolve() : new Promise((resolve) => this.#idle.push(resolve));
  }
}

/** `running`, counted in `inFlight` until it settles (the retries' attempts: off the hot path). */
const counted = <A>(running: Promise<A>, inFlight: OperationsInFlight | undefined): Promise<A> => {
  if (!inFlight) return running;
  inFlight.started();
  const ended = () => inFlight.ended();
  running.then(ended, ended);
  return running;
};

/** The failure as the port explains it (`ConnectionPort.explain`), or as it is. */
export const explained = <C>(
  port: ConnectionPort<C>,
  client: C,
  error: unknown,
  operation: string,
): unknown => (port.explain ? port.explain(client, error, operation) : error);

/**
 * Turns whatever a client call threw into a tagged broker error. Lives in the
 * adapter (only it knows the client's error classes) and is handed in here.
 */
export type ErrorClassifier = (error: unknown, operation: string) => BrokerError | RuntimeStopped;

/**
 * Runs `op` on the connection: waits for `connected` (bounded by the
 * deadline), retries transient failures with the retry policy, fails
 * permanent ones at once. A caller that publishes must give the message a
 * stable id, so that a retry of an "unknown" outcome can never duplicate.
 */
const runOperation = <C, A>(
  port: ConnectionPort<C>,
  op: (client: C, signal: AbortSignal) => Promise<A>,
  classify: ErrorClassifier,
  options: OperationOptions,
): Effect.Effect<A, BrokerError | RuntimeStopped> => {
  const retry = options.retry ?? defaultRetry;
  // Which phase the deadline interrupted decides the error the caller sees.
  let waiting = true;
  const attempt = Effect.gen(function* () {
    waiting = true;
    const client = yield* Effect.tryPromise({
      try: (signal) => port.whenConnected(signal),
      catch: (error) =>
        error instanceof RuntimeStopped ? error : classify(error, `${options.name} (waiting for connection)`),
    });
    waiting = false;
    return yield* Effect.tryPromise({
      try: (signal) => counted(op(client, signal), options.inFlight),
      catch: (error) => classify(explained(port, client, error, options.name), options.name),
    });
  });
  return attempt.pipe(
    retryWith<BrokerError | RuntimeStopped>(retry, isTransient),
    Effect.timeoutOrElse({
      duration: `${options.timeoutMs} millis`,
      orElse: () =>
        Effect.fail(
          waiting
            ? new ConnectionUnavailable({
                message: `${options.name}: no NATS connection within ${options.timeoutMs} ms`,
              })
            : new OperationTimeout({
                message: `${options.name}: no answer within ${options.timeoutMs} ms (outcome unknown)`,
                operation: options.name,
                timeoutMs: options.timeoutMs,
              }),
        ),
    }),
  );
};

const runFull = <C, A>(
  port: ConnectionPort<C>,
  op: (client: C, signal: AbortSignal) => Promise<A>,
  classify: ErrorClassifier,
  options: OperationOptions,
  pauseFirstMs = 0,
): Promise<A> => {
  const signal = options.signal && options.sharedSignal ? AbortSignal.any([options.signal]) : options.signal;
  return Effect.runPromise(
    pauseFirstMs > 0
      ? Effect.sleep(`${pauseFirstMs} millis`).pipe(Effect.andThen(runOperation(port, op, classify, options)))
      : runOperation(port, op, classify, options),
    signal ? { signal } : undefined,
  ).catch((error: unknown) => {
    if (signal?.aborted && !(error instanceof Error && "_tag" in error)) {
      throw new RuntimeStopped({ message: `${options.name}: aborted` });
    }
    throw error;
  });
};

/** The first attempt's deadline passed: the whole operation's, since it started at once. */
class FirstAttemptTimedOut {}

const noSignal = new AbortController().signal;

/**
 * Promise form for the runtime's public API; rejects with the tagged error
 * itself. While the connection is `connected` the first attempt runs at
 * once on the current client, bounded by the deadline with one timer, and
 * only a transient failure goes on to the Effect program of `runOperation`
 * (the pause before the next attempt, the schedule, the rest of the
 * deadline). That program per operation, its fiber, signals and timeout,
 * cost about 0.15 ms more than the call itself: about ten operations of a
 * small job each paid it, succeeding at once nearly every time.
 */
export const runOperationPromise = <C, A>(
  port: ConnectionPort<C>,
  op: (client: C, signal: AbortSignal) => Promise<A>,
  classify: ErrorClassifier,
  options: OperationOptions,
): Promise<A> => {
  const client = port.current?.();
  const signal = options.signal ?? noSignal;
  if (client === undefined || signal.aborted) return runFull(port, op, classify, options);
  const started = Date.now();
  const inFlight = options.inFlight;
  const first = new Promise<A>((resolve, reject) => {
    const timer = setTimeout(() => reject(new FirstAttemptTimedOut()), options.timeoutMs);
    const running = op(client, signal);
    inFlight?.started();
    running.then(
      (value) => {
        clearTimeout(timer);
        inFlight?.ended();
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        inFlight?.ended();
        reject(error);
      },
    );
  });
  return first.catch((error: unknown) => {
    if (error instanceof FirstAttemptTimedOut)
      throw new OperationTimeout({
        message: `${options.name}: no answer within ${options.timeoutMs} ms (outcome unknown)`,
        operation: options.name,
        timeoutMs: options.timeoutMs,
      });
    if (signal.aborted) throw new RuntimeStopped({ message: `${options.name}: aborted` });
    const failure = classify(explained(port, client, error, options.name), options.name);
    const retry = options.retry ?? defaultRetry;
    // The attempts left, from the pause that would have followed this one, within the deadline.
    const pauseMs = Math.min(retry.initialDelayMs, retry.maxDelayMs ?? Number.POSITIVE_INFINITY);
    const leftMs = options.timeoutMs - (Date.now() - started) - pauseMs;
    if (!isTransient(failure) || retry.attempts <= 1 || leftMs <= 0) throw failure;
    return runFull(
      port,
      op,
      classify,
      {
        ...options,
        timeoutMs: leftMs,
        retry: { ...retry, attempts: retry.attempts - 1, initialDelayMs: retry.initialDelayMs * 2 },
      },
      pauseMs,
    );
  });
};
