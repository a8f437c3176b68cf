import {
  emptyBatchBytes,
  encodeFailed,
  fitsAlone,
  withAnswerSubmit,
  withLetter,
} from "../kernel/result-wire.ts";
import {
  decideOutcome,
  type OutcomeContext,
  PermanentError,
  type TaskOutcome,
} from "../kernel/task-outcome.ts";
import type { ResultBatcher, Settle } from "./result-batcher.ts";

/**
 * The one answer path of a delivered task, for native workers
 * (src/api/workers.ts) and HTTP workers (src/adapters/http/): what the
 * handler gave → its outcome (kernel/task-outcome.ts) and result entry
 * (kernel/wire.ts) → dead letter → results message → ack, term or nak.
 */

/** What the handler gave for one delivery: its result entry (kernel/wire.ts), or what it threw. */
export type HandlerAnswer =
  | { readonly ok: true; readonly entry: string }
  | { readonly ok: false; readonly error: unknown };

export interface AnswerPlan {
  readonly outcome: TaskOutcome;
  /** The entry to store before the ack or term; none for a retry (nak, failover). */
  readonly entry: string | undefined;
  /** The submit its entry names (`AnswerContext.submit`): its dead letter names it too. */
  readonly submit?: string | undefined;
}

export interface AnswerContext extends OutcomeContext {
  /** Largest results message, in bytes: a result must fit alone, a retry would never make it smaller. */
  readonly maxBatchBytes: number;
  /**
   * The submit that published the task, on a 1-task lane job (its task is its commit point):
   * its entry names it (`withAnswerSubmit`), so that no later submit of the key counts it.
   */
  readonly submit?: string | undefined;
}

const ack: TaskOutcome = { kind: "ack" };

/** Decides what becomes of one delivery; pure. */
export const planAnswer = (index: number, answer: HandlerAnswer, context: AnswerContext): AnswerPlan => {
  const { submit } = context;
  const named = (entry: string) => (submit === undefined ? entry : withAnswerSubmit(entry, submit));
  let error: unknown;
  if (answer.ok) {
    if (fitsAlone(answer.entry, context.maxBatchBytes))
      return { outcome: ack, entry: named(answer.entry), submit };
    error = new PermanentError(
      `result of task ${index} is too large for a results message (${Buffer.byteLength(answer.entry)} bytes; at most ${context.maxBatchBytes - emptyBatchBytes})`,
    );
  } else {
    // `throw undefined` is a failure too, not a success without a result.
    error = answer.error === undefined ? new Error("undefined") : answer.error;
  }
  const outcome = decideOutcome(error, context);
  const entry =
    outcome.kind === "term" || outcome.kind === "dead"
      ? named(encodeFailed(index, outcome.error, outcome.kind === "dead"))
      : undefined;
  return { outcome, entry, submit };
};

/**
 * One delivery being answered, settled by its holder (a native lease, an
 * HTTP receipt). As a batcher `Settle`: `stored` acks (`done`) or terms.
 */
export interface Delivery extends Settle {
  /** Release for another attempt after `delayMs`. */
  retry(delayMs: number): void;
  /** Its dead letter was not stored: left to the exhausted-task path (kernel/dead-letter.ts), unanswered. */
  deadLetterLost(error: unknown): void;
}

/**
 * Carries a plan out, in the order that loses nothing: a dead task's letter
 * first (its payload is gone once it is termed), then its entry into a
 * results message, naming that letter by the sequence its store answered
 * (kernel/wire.ts: a redrive's marker takes back only a death of a letter it
 * sends back), and the ack or term only once that message is stored
 * (the batcher calls `stored`). A failover is the caller's to report first;
 * here it is a retry after `delayMs` like a nak.
 */
// A plain function, unlike the job operations: it runs once per task, and an Effect run per task
// costs throughput. A promise only for a dead letter's store: most tasks are answered in the caller's turn.
export const answerTask = <D extends Delivery>(
  jobId: string,
  plan: AnswerPlan,
  delivery: D,
  results: Pick<ResultBatcher<D>, "add">,
  /**
   * Stores the letter, naming `submit` when the entry does (a 1-task lane job's: a letter of
   * a rolled-back submit is not the next one's); answers its sequence in the dead-letter
   * store (anything else: the entry names no letter).
   */
  storeDeadLetter: (error: string, submit: string | undefined) => Promise<unknown>,
): void | Promise<void> => {
  const { outcome, entry } = plan;
  if (entry === undefined) {
    delivery.retry(outcome.kind === "nak" || outcome.kind === "failover" ? outcome.delayMs : 0);
    return;
  }
  if (outcome.kind !== "dead") {
    results.add(jobId, entry, delivery);
    return;
  }
  const stored = (async () => storeDeadLetter(outcome.error, plan.submit))();
  return stored.then(
    (letter) => results.add(jobId, typeof letter === "number" ? withLetter(entry, letter) : entry, delivery),
    (error: unknown) => delivery.deadLetterLost(error),
  );
};
