import { Retry } from "../errors.ts";

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
  | { readonly kind: "nak"; readonly delayMs: number; readonly error: string };

export interface OutcomeContext {
  /** This delivery's number, from 1. */
  readonly attempt: number;
  readonly maxDeliver: number;
  readonly backoffMs: readonly number[];
  /** The user's own "never retry this" predicate, on top of `PermanentError`. */
  readonly isPermanent?: (error: unknown) => boolean;
}

const text = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/**
 * The one mapper from a handler's error to ack / nak(delay) / term: the
 * error's type carries its retry decision (`retry: "permanent"`), so
 * nothing parses messages.
 */
export const decideOutcome = (error: unknown, context: OutcomeContext): TaskOutcome => {
  if (error === undefined) return { kind: "ack" };
  const permanent =
    (typeof error === "object" &&
      error !== null &&
      (error as { retry?: unknown }).retry === Retry.permanent) ||
    (context.isPermanent?.(error) ?? false);
  if (permanent) return { kind: "term", error: text(error) };
  if (context.attempt >= context.maxDeliver) {
    return { kind: "dead", error: `${text(error)} (after ${context.attempt} deliveries)` };
  }
  const delays = context.backoffMs;
  const delayMs = delays[Math.min(context.attempt - 1, delays.length - 1)] ?? 0;
  return { kind: "nak", delayMs, error: text(error) };
};
