import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { encodeDeadLetter } from "../../kernel/dead-letter.ts";
import { encodeDeadResult } from "../../kernel/result-wire.ts";
import type { TaskBody } from "../../kernel/wire.ts";
import type { UnhandledExhausted } from "../dead-letters.ts";
import type { BrokerNames } from "../names.ts";

/**
 * What becomes of one task that exhausted its deliveries on NATS, once its
 * advisory is read (`NatsDeadLetters.process`): its dead letter and `dead`
 * result stored and its message removed, or, when the letter cannot be
 * stored, its `dead` result alone (`giveUp`).
 */

/** A MAX_DELIVERIES advisory, as the server sends it. */
export interface MaxDeliveriesAdvisory {
  readonly stream: string;
  readonly consumer: string;
  readonly stream_seq: number;
  readonly deliveries: number;
}

/** An advisory with the queue whose advisories stream it came from, and the job of its task. */
export type Exhausted = MaxDeliveriesAdvisory & { readonly queue: string; readonly jobId: string };

/** Copies the exhausted task to the dead letters, stores its `dead` result, removes it. */
export const deadLetter = async (
  names: BrokerNames,
  js: JetStreamClient,
  jsm: JetStreamManager,
  exhausted: Exhausted,
  body: TaskBody,
  submit: string | undefined,
): Promise<void> => {
  const { queue, jobId } = exhausted;
  const letter = {
    queue,
    jobId,
    index: body.index,
    payload: body.payload,
    error: `no answer after ${exhausted.deliveries} deliveries (worker died or its lease ran out)`,
    deliveries: exhausted.deliveries,
    at: Date.now(),
    source: "advisory" as const,
    ...(submit === undefined ? {} : { submit }),
  };
  const stored = await js.publish(names.deadSubject(queue, jobId), encodeDeadLetter(letter), {
    msgID: `dead.${jobId}.${exhausted.stream_seq}`,
  });
  // Naming its letter (a retried store's PubAck names the first's sequence).
  await deadResult(names, js, exhausted, body.index, letter.error, stored.seq, submit);
  // The letter is stored: a task left in the stream is only a leftover, its consumer long past it.
  await removeTask(names, jsm, exhausted);
};

/** The exhausted task's message leaves the tasks stream (gone already: nothing to do). */
export const removeTask = (
  names: BrokerNames,
  jsm: JetStreamManager,
  exhausted: Exhausted,
): Promise<unknown> =>
  jsm.streams.deleteMessage(names.tasksStream(exhausted.queue), exhausted.stream_seq).catch(() => undefined);

const deadResult = (
  names: BrokerNames,
  js: JetStreamClient,
  exhausted: Exhausted,
  index: number,
  error: string,
  letter?: number,
  submit?: string,
) => {
  const { queue, jobId } = exhausted;
  return js.publish(names.resultsSubject(queue, jobId), encodeDeadResult(index, error, letter, submit), {
    msgID: `deadresult.${jobId}.${exhausted.stream_seq}`,
  });
};

/**
 * An exhausted task that cannot be dead-lettered (a permanent error): a
 * retry would fail the same way every ack wait, forever, and its job would
 * never end. So it ends here, visibly: its `dead` result is stored (a small
 * message, so it fits where the letter did not) and the job counts it, the
 * task leaves the stream, and `onUnhandled` logs it.
 */
export const giveUp = async (
  names: BrokerNames,
  js: JetStreamClient,
  jsm: JetStreamManager,
  exhausted: Exhausted,
  index: number | undefined,
  submit: string | undefined,
  error: unknown,
  onUnhandled?: (failure: UnhandledExhausted) => void,
): Promise<void> => {
  const { queue, jobId } = exhausted;
  let countedDead = false;
  if (index !== undefined) {
    const reason = `no answer after ${exhausted.deliveries} deliveries; dead letter not stored: ${String(error instanceof Error ? error.message : error)}`;
    countedDead = await deadResult(names, js, exhausted, index, reason, undefined, submit).then(
      () => true,
      () => false,
    );
  }
  // Reported through onUnhandled just below, with the error that matters; a leftover task
  // message is past its consumer's reach.
  await removeTask(names, jsm, exhausted);
  onUnhandled?.({ queue, jobId, index, error, countedDead });
};
