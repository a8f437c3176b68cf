import { MalformedMessage } from "./errors.ts";

/**
 * The dead-letter wire format, owned here for both brokers, and the room a
 * dead letter needs next to its task's payload (the task and progress
 * formats are wire.ts', the results format result-wire.ts').
 *
 * A dead letter is a copy of the task's payload with the job, index, error,
 * deliveries, time and source around it, stored under its own message id.
 * Submit keeps that room free under the server's max payload
 * (`deadLetterRoomBytes`), so every task submit accepts can die: a dead
 * letter that did not fit could never be stored, and the task's job would
 * never end.
 */

/** What a dead letter says besides its task id (derived) and its store position. */
export interface DeadLetterFields {
  readonly queue: string;
  readonly jobId: string;
  readonly index: number;
  readonly payload: unknown;
  readonly error: string;
  readonly deliveries: number;
  readonly at: number;
  readonly source: "worker" | "advisory";
  /**
   * The task message that died, by its sequence in its queue's tasks stream (a worker's
   * letter; absent in an advisory's, whose path removes the task, and in letters written
   * before it): a redrive deletes it, so that one whose term was lost never dies a second
   * time after the redrive's marker (its advisory's dead answer counted as the copy's).
   */
  readonly taskSeq?: number;
  /**
   * The submit whose task died, on a 1-task lane job (its task is its commit point, as its
   * dead answer names it: `answerSubmit`): a letter of a rolled-back submit's late task is
   * not the next submit's of the key (`lettersOfSubmit`). Absent on any other, and in
   * letters written before it: the record's.
   */
  readonly submit?: string;
}

/** Longest error text kept in a dead letter or an error result, in UTF-16 units. */
export const maxErrorChars = 256;

/**
 * Error texts are bounded so that a dead letter's size is bounded by its
 * payload's; a cut one says so and how long it was.
 */
export const boundError = (error: string): string => {
  if (error.length <= maxErrorChars) return error;
  const note = `… [truncated from ${error.length} characters]`;
  return `${error.slice(0, maxErrorChars - note.length)}${note}`;
};

export const encodeDeadLetter = (letter: DeadLetterFields): string =>
  JSON.stringify({
    ...letter,
    error: boundError(letter.error),
    taskId: `${letter.jobId}.${letter.index}`,
  });

/** A stored dead letter, as `encodeDeadLetter` wrote it; throws `MalformedMessage` for anything else. */
export const decodeDeadLetter = (body: string): DeadLetterFields & { readonly taskId: string } => {
  const malformed = (why: string) =>
    new MalformedMessage({
      format: "dead letter",
      message: `not a dead letter (${why}): ${body.length > 80 ? `${body.slice(0, 80)}…` : body}`,
    });
  let letter: Partial<Record<keyof DeadLetterFields | "taskId", unknown>> | null;
  try {
    letter = JSON.parse(body);
  } catch (error) {
    throw malformed(error instanceof Error ? error.message : String(error));
  }
  if (
    typeof letter !== "object" ||
    letter === null ||
    typeof letter.queue !== "string" ||
    typeof letter.jobId !== "string" ||
    !Number.isSafeInteger(letter.index) ||
    typeof letter.error !== "string" ||
    typeof letter.taskId !== "string" ||
    (letter.taskSeq !== undefined && !Number.isSafeInteger(letter.taskSeq)) ||
    (letter.submit !== undefined && typeof letter.submit !== "string")
  ) {
    throw malformed("fields missing");
  }
  return letter as DeadLetterFields & { readonly taskId: string };
};

/** Headers of a message with only a message id, as both brokers count them against the max payload. */
const headerBytes = (msgId: string) => Buffer.byteLength(`NATS/1.0\r\nNats-Msg-Id: ${msgId}\r\n\r\n`);

/**
 * Bytes a dead letter adds to its task's payload (JSON), at most: the
 * largest queue name, job id, index, deliveries and time, an error of `maxErrorChars`
 * characters that each escape to six bytes, and the longest message id either
 * store path uses. Computed from the encoder itself, so the two cannot drift.
 */
export const deadLetterRoomBytes: number = (() => {
  const queue = "q".repeat(128); // the longest queue name (validation.ts SubjectToken)
  const jobId = `k${"x".repeat(43)}`;
  const index = 9_999_999;
  const deliveries = 9_999_999;
  const worst = encodeDeadLetter({
    queue,
    jobId,
    index,
    payload: null,
    error: "\u0000".repeat(maxErrorChars),
    deliveries,
    at: 9_999_999_999_999,
    source: "advisory",
    taskSeq: Number.MAX_SAFE_INTEGER,
    // A submit id is 8 characters (plan-submit.ts); room for a whole UUID all the same.
    submit: "s".repeat(36),
  });
  const msgId = `deadw.${jobId}.${index}.${deliveries}.${"9".repeat(16)}`;
  return Buffer.byteLength(worst) - "null".length + headerBytes(msgId);
})();
