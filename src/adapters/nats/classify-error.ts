import { JetStreamApiError, JetStreamError } from "@nats-io/jetstream";
import {
  AuthorizationError,
  ClosedConnectionError,
  ConnectionError,
  DrainingConnectionError,
  InvalidArgumentError,
  InvalidSubjectError,
  NoRespondersError,
  PermissionViolationError,
  RequestError,
  TimeoutError,
} from "@nats-io/transport-node";
import {
  type BrokerError,
  ConnectionUnavailable,
  isNotProvisioned,
  OperationTimeout,
  PermanentBrokerError,
  type RuntimeStopped,
  TransientBrokerError,
} from "../../kernel/errors.ts";

/** JetStream API codes that mean "not now" rather than "never" (server restarting, no leader yet). */
const transientApiCodes = new Set([10008 /* temporarily unavailable */, 10023 /* insufficient resources */]);

const message = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/**
 * The one place that turns nats.js errors into jetstate's tagged errors, and
 * so decides what is retried. A timeout's outcome is unknown: it is retried,
 * and callers that publish use a message id so the retry cannot duplicate.
 */
export const classifyNatsError = (error: unknown, operation: string): BrokerError | RuntimeStopped => {
  if (error instanceof Error && "_tag" in error) return error as BrokerError | RuntimeStopped;
  if (error instanceof TimeoutError) {
    return new OperationTimeout({ message: `${operation}: ${message(error)}`, operation, timeoutMs: 0 });
  }
  if (error instanceof RequestError) {
    // nats.js wraps timeouts and "no responders" (JetStream not up yet) in RequestError.
    const cause = (error as { cause?: unknown }).cause;
    if (cause instanceof PermissionViolationError) return permanent(error, operation);
    return new TransientBrokerError({ message: `${operation}: ${message(error)}`, operation, cause: error });
  }
  if (
    error instanceof ConnectionError ||
    error instanceof ClosedConnectionError ||
    error instanceof DrainingConnectionError ||
    error instanceof NoRespondersError
  ) {
    return new TransientBrokerError({ message: `${operation}: ${message(error)}`, operation, cause: error });
  }
  if (error instanceof JetStreamApiError) {
    if (transientApiCodes.has(error.code) || error.status === 503) {
      return new TransientBrokerError({
        message: `${operation}: ${message(error)}`,
        operation,
        cause: error,
      });
    }
    return permanent(error, operation, error.code);
  }
  if (
    error instanceof PermissionViolationError ||
    error instanceof AuthorizationError ||
    error instanceof InvalidArgumentError ||
    error instanceof InvalidSubjectError
  ) {
    return permanent(error, operation);
  }
  if (error instanceof JetStreamError) {
    // e.g. "503 no responders" / "jetstream is not enabled" on a JetStream call right
    // after a server restart, before JetStream is back: a few retries bridge it
    return /503|no responders|timeout|not enabled/i.test(message(error))
      ? new TransientBrokerError({ message: `${operation}: ${message(error)}`, operation, cause: error })
      : permanent(error, operation);
  }
  if (/connection (closed|lost)|disconnect/i.test(message(error))) {
    return new ConnectionUnavailable({ message: `${operation}: ${message(error)}` });
  }
  // js.publish() raises JetStreamNotEnabled (not exported by nats.js) when no stream answers:
  // right after a server restart that is "not yet", so it is retried like the 503 above.
  if (error instanceof Error && error.name === "JetStreamNotEnabled") {
    return new TransientBrokerError({ message: `${operation}: ${message(error)}`, operation, cause: error });
  }
  return permanent(error, operation);
};

const permanent = (error: unknown, operation: string, code?: number) =>
  new PermanentBrokerError({
    message: `${operation}: ${message(error)}`,
    operation,
    ...(code === undefined ? {} : { code }),
    cause: error,
  });

/**
 * Whether a failed request may still have taken effect on the server (no
 * answer in time, a transient failure): what it was to make may exist. Not
 * when the server refused it (a permission, an API error).
 */
export const mayHaveApplied = (error: unknown): boolean =>
  !(classifyNatsError(error, "request") instanceof PermanentBrokerError);

/**
 * Whether the server refused this user the request (nats.js 3 rejects it
 * with a `RequestError` whose cause is the `PermissionViolationError`), or a
 * create refused before and not asked again (`notProvisioned`).
 */
export const isPermissionViolation = (error: unknown): boolean =>
  isNotProvisioned(error) ||
  (error instanceof Error &&
    (error.name === "PermissionViolationError" ||
      (error.cause instanceof Error && error.cause.name === "PermissionViolationError")));
