import { Data } from "effect";

/**
 * Every error jetstate raises is a tagged value that says whether it may be
 * retried, so one mapper (ack / nak / term) and one retry policy decide from
 * the type alone — never from parsing a message string.
 */
export const Retry = {
  /** The same operation may succeed if tried again later (connection blips). */
  transient: "transient",
  /** Trying again can never help (bad request, permission, not found). */
  permanent: "permanent",
} as const;
export type RetryDecision = (typeof Retry)[keyof typeof Retry];

/** No usable connection within the operation's deadline. */
export class ConnectionUnavailable extends Data.TaggedError("ConnectionUnavailable")<{
  readonly message: string;
  readonly state?: string;
}> {
  readonly retry: RetryDecision = Retry.transient;
}

/** The operation did not finish before its deadline (its outcome is unknown). */
export class OperationTimeout extends Data.TaggedError("OperationTimeout")<{
  readonly message: string;
  readonly operation: string;
  readonly timeoutMs: number;
}> {
  readonly retry: RetryDecision = Retry.transient;
}

/** A connection-level failure during an operation: retried with the same message id. */
export class TransientBrokerError extends Data.TaggedError("TransientBrokerError")<{
  readonly message: string;
  readonly operation: string;
  readonly cause?: unknown;
}> {
  readonly retry: RetryDecision = Retry.transient;
}

/** The broker refused the operation for a reason a retry cannot fix. */
export class PermanentBrokerError extends Data.TaggedError("PermanentBrokerError")<{
  readonly message: string;
  readonly operation: string;
  readonly code?: number;
  readonly cause?: unknown;
  /**
   * The stream or bucket that is missing and this runtime's NATS user may
   * not create (an admin must provision it): the same call works once it
   * is there.
   */
  readonly notProvisioned?: string;
}> {
  readonly retry: RetryDecision = Retry.permanent;
}

/** A stream or bucket missing that this runtime's NATS user may not create (`notProvisioned`). */
export const isNotProvisioned = (error: unknown): boolean =>
  error instanceof PermanentBrokerError && error.notProvisioned !== undefined;

/** A compare-and-set lost against a concurrent writer: re-read and re-decide. */
export class RevisionConflict extends Data.TaggedError("RevisionConflict")<{
  readonly message: string;
  readonly key: string;
}> {
  readonly retry: RetryDecision = Retry.permanent;
}

/**
 * A job's supervisor found its record naming another supervisor (a runtime
 * that took the job over since): it writes nothing more of the job and
 * steps down. Never retried.
 */
export class Deposed extends Data.TaggedError("Deposed")<{
  readonly message: string;
  readonly jobId: string;
  readonly supervisor: string;
}> {
  readonly retry: RetryDecision = Retry.permanent;
}

/** Bad options or input, detected before anything is sent to NATS. */
export class InvalidArgument extends Data.TaggedError("InvalidArgument")<{
  readonly message: string;
  /** Dotted path of the offending field, e.g. `tasks[3].url` or `connection.backoff.initialMs`. */
  readonly field?: string;
}> {
  readonly retry: RetryDecision = Retry.permanent;
}

/**
 * The idempotency key already names a job of the queue that was submitted with
 * other tasks or settings: returning that job would hide the difference, and
 * submitting would break the key's promise. Permanent: use another key.
 */
export class IdempotencyConflict extends Data.TaggedError("IdempotencyConflict")<{
  readonly message: string;
  readonly idempotencyKey: string;
  readonly queue: string;
  /** The job the key already names. */
  readonly jobId: string;
}> {
  readonly retry: RetryDecision = Retry.permanent;
}

/** The runtime was stopped while the operation waited or ran. */
export class RuntimeStopped extends Data.TaggedError("RuntimeStopped")<{
  readonly message: string;
}> {
  readonly retry: RetryDecision = Retry.permanent;
}

/** `reportFailure` (or a worker's `agent` option) named an agent the runtime does not know. */
export class UnknownAgent extends Data.TaggedError("UnknownAgent")<{
  readonly message: string;
  readonly agentId: string;
}> {
  readonly retry: RetryDecision = Retry.permanent;
}

/**
 * A task could not run because its agent's upstream target is down. Transient:
 * a worker bound to the agent reports it to the agent's lock and retries the
 * task at once on the new target.
 */
export class TargetUnavailable extends Data.TaggedError("TargetUnavailable")<{
  readonly message: string;
  readonly agentId: string;
  readonly target: string;
}> {
  readonly retry: RetryDecision = Retry.transient;
}

/**
 * A message body that is not what jetstate writes there (src/kernel/wire.ts
 * and dead-letter.ts own the formats), or a value that JSON cannot carry. Permanent: the same
 * bytes never read differently.
 */
export class MalformedMessage extends Data.TaggedError("MalformedMessage")<{
  readonly message: string;
  /** Which format: a task, a held (delayed) task, a result (entry or batch), a progress note, a dead letter. */
  readonly format: "task" | "held task" | "result" | "progress" | "dead letter";
}> {
  readonly retry: RetryDecision = Retry.permanent;
}

/** The runtime was created without the role the call needs (`createRuntime({ roles })`). */
export class RoleNotHeld extends Data.TaggedError("RoleNotHeld")<{
  readonly message: string;
  readonly role: string;
}> {
  readonly retry: RetryDecision = Retry.permanent;
}

export type BrokerError =
  | ConnectionUnavailable
  | OperationTimeout
  | TransientBrokerError
  | PermanentBrokerError;

export type JetstateError =
  | BrokerError
  | RevisionConflict
  | InvalidArgument
  | IdempotencyConflict
  | RuntimeStopped
  | UnknownAgent
  | TargetUnavailable
  | RoleNotHeld;

export const isTransient = (error: unknown): boolean =>
  typeof error === "object" && error !== null && (error as { retry?: unknown }).retry === Retry.transient;

/**
 * The reason given when a job's or a loop's own work is over and its
 * internal signal is aborted: made once. An abort without a reason makes a
 * `DOMException` with its stack each time, ~2 % of a small job's CPU (three
 * such aborts a job: its actor, its results reader, a loop). Never for a
 * signal user code sees (a handler's): one object shared by every abort
 * would carry whatever a handler put on it to the next.
 */
export const workOver: Error = Object.assign(new Error("This operation was aborted (its work is over)"), {
  // Named as the standard abort reason is, for a handler that tells an abort by its name.
  name: "AbortError",
});
