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
}

export type { RetryPolicy } from "./retry.ts";

export interface OperationOptions {
  /** For errors and logs, e.g. `publish`, `kv.update`. */
  readonly name: string;
  /** Deadline for the whole operation: waiting, every attempt and the pauses between. */
  readonly timeoutMs: number;
  readonly retry?: RetryPolicy;
  readonly signal?: AbortSignal;
}

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
      try: (signal) => op(client, signal),
      catch: (error) => classify(error, options.name),
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

/** Promise form for the runtime's public API; rejects with the tagged error itself. */
export const runOperationPromise = <C, A>(
  port: ConnectionPort<C>,
  op: (client: C, signal: AbortSignal) => Promise<A>,
  classify: ErrorClassifier,
  options: OperationOptions,
): Promise<A> =>
  Effect.runPromise(
    runOperation(port, op, classify, options),
    options.signal ? { signal: options.signal } : undefined,
  ).catch((error: unknown) => {
    if (options.signal?.aborted && !(error instanceof Error && "_tag" in error)) {
      throw new RuntimeStopped({ message: `${options.name}: aborted` });
    }
    throw error;
  });
