import { createHash } from "node:crypto";
import type { HandlerAnswer } from "../../effects/answer-task.ts";
import { encodeDoneJson } from "../../kernel/result-wire.ts";
import { PermanentError } from "../../kernel/task-outcome.ts";
import type { RecordedAnswer } from "../broker.ts";
import { ErrorCode, HttpError } from "./http-errors.ts";
import type { ItemOutcome } from "./lease-port.ts";
import type { ResultItem } from "./request-bodies.ts";

/*
 * What a posted answer is (`handlerAnswer`), how it is told from another
 * answer to the same delivery (`answerDigest`, `repeated`), and the message
 * id its results go under (`messageId`): pure, for `receipt-answers.ts`.
 */

/** A posted answer as the answer path takes it: the result entry, or the error. */
export const handlerAnswer = (index: number, item: ResultItem): HandlerAnswer =>
  item.ok
    ? { ok: true, entry: encodeDoneJson(index, item.json) }
    : { ok: false, error: item.permanent ? new PermanentError(item.message) : new Error(item.message) };

/** A delivery answered before: the same answer is a duplicate, another one a conflict. */
export const repeated = (id: string, digest: string, first: RecordedAnswer | undefined): ItemOutcome => {
  if (first === undefined) {
    // The first attempt failed to store it and released the lease: this one must be retried.
    throw new HttpError(
      503,
      ErrorCode.unavailable,
      "a concurrent request for the same receipt failed; try again",
    );
  }
  if (first.digest === digest) return { id, status: first.status, duplicate: true };
  return { id, status: "conflict", answered: first.status };
};

/** What was answered, so a retried POST (same answer) can be told from a different answer. */
export const answerDigest = (item: ResultItem): string =>
  createHash("sha256")
    .update(item.ok ? `ok\n${item.json}` : `error\n${item.permanent}\n${item.message}`)
    .digest("base64url")
    .slice(0, 22);

export const countStatuses = (outcomes: readonly ItemOutcome[]) => {
  const counts = { done: 0, failed: 0, dead: 0, retry: 0, expired: 0, pending: 0, conflict: 0, duplicate: 0 };
  for (const o of outcomes) {
    if (o.duplicate) counts.duplicate++;
    else counts[o.status]++;
  }
  return counts;
};

/**
 * The same deliveries always give the same message id, so a POST retried
 * after an unknown outcome is stored once (JetStream's duplicate window).
 */
export const messageId = (jobId: string, replies: readonly string[]): string =>
  `${jobId}.http.${createHash("sha256")
    .update([...replies].sort().join("\n"))
    .digest("base64url")
    .slice(0, 32)}`;
