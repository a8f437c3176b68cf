import { boundError } from "./dead-letter.ts";
import { Retry, type TargetUnavailable } from "./errors.ts";

/**
 * Throw this from a handler when retrying can never help (a broken image
 * URL, malformed input): the task is terminated and counted failed at once,
 * instead of being redelivered until `maxDeliver`.
 */
export class PermanentError extends Error {
  override readonly name = "PermanentError";
  readonly retry = Retry.permanent;
}

/** What a worker does with a delivered task once its handler settled. */
export type TaskOutcome =
  /** Store the result, then ack. */
  | { readonly kind: "ack" }
  /** Store an error result, then term: counted failed, never redelivered. */
  | { readonly kind: "term"; readonly error: string }
  /** Store an error result marked dead, then term: the last delivery failed too. */
  | { readonly kind: "dead"; readonly error: string }
  /** Release for a later attempt after `delayMs`. */
  | { readonly kind: "nak"; readonly delayMs: number; readonly error: string }
  /**
   * The bound agent's target is down: report it to the agent's lock, then
   * release at once if the agent moved on (the retry runs on the new target),
   * else after `delayMs` like any retry. Counted failed nowhere, but it is a
   * delivery to JetStream, so it counts towards `maxDeliver`.
   */
  | { readonly kind: "failover"; readonly agentId: string; readonly delayMs: number; readonly error: string };

export interface OutcomeContext {
  /** This delivery's number, from 1. */
  readonly attempt: number;
  readonly maxDeliver: number;
  readonly backoffMs: readonly number[];
  /** The user's own "never retry this" predicate, on top of `PermanentError`. */
  readonly isPermanent?: (error: unknown) => boolean;
  /** The agent the worker is bound to: its `TargetUnavailable` errors fail over instead of backing off. */
  readonly agentId?: string;
}

// Bounded: an error result or dead letter must fit under the max payload whatever the handler threw.
const text = (error: unknown): string => boundError(printed(error));

/** The error as text, whatever was thrown: one with no prototype, or whose `toString` throws, too. */
const printed = (error: unknown): string => {
  try {
    return error instanceof Error ? String(error.message) : String(error);
  } catch {
    return Object.prototype.toString.call(error);
  }
};

/**
 * The user's `isPermanent` on the error; one that throws (a predicate that reads a field the
 * error does not have) says nothing: the failure is retried as any other. It threw out of the
 * worker's answer, which left the task unanswered, its slot taken, until `maxTaskMs`.
 */
const saysPermanent = (error: unknown, isPermanent: ((error: unknown) => boolean) | undefined): boolean => {
  try {
    return isPermanent?.(error) === true;
  } catch {
    return false;
  }
};

// By tag, like the agent lock: the tag is the contract, whichever module copy built the error.
const isTargetUnavailable = (error: unknown): error is TargetUnavailable =>
  typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "TargetUnavailable";

/**
 * The one mapper from a handler's error to ack / nak(delay) / term /
 * failover: the error's type carries its retry decision (`retry:
 * "permanent"`, `TargetUnavailable`), so nothing parses messages. The last
 * delivery is dead whatever the error: JetStream will not deliver it again.
 */
/** The pause before the next delivery of a task that failed on delivery `attempt` (from 1). */
export const backoffDelayMs = (backoffMs: readonly number[], attempt: number): number =>
  backoffMs[Math.min(attempt - 1, backoffMs.length - 1)] ?? 0;

export const decideOutcome = (error: unknown, context: OutcomeContext): TaskOutcome => {
  if (error === undefined) return { kind: "ack" };
  const permanent =
    (typeof error === "object" &&
      error !== null &&
      (error as { retry?: unknown }).retry === Retry.permanent) ||
    saysPermanent(error, context.isPermanent);
  if (permanent) return { kind: "term", error: text(error) };
  if (context.attempt >= context.maxDeliver) {
    return { kind: "dead", error: `${text(error)} (after ${context.attempt} deliveries)` };
  }
  const delayMs = backoffDelayMs(context.backoffMs, context.attempt);
  // Only for the bound agent: an error naming another agent is an ordinary transient one.
  if (context.agentId !== undefined && isTargetUnavailable(error) && error.agentId === context.agentId) {
    return { kind: "failover", agentId: context.agentId, delayMs, error: text(error) };
  }
  return { kind: "nak", delayMs, error: text(error) };
};
