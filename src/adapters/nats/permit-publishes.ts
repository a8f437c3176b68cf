import type { JetStreamClient } from "@nats-io/jetstream";

/**
 * A pool's permits as messages (queue-controls.ts): published in windows
 * under ids that make a retry no second permit, and removed by sequence.
 */

/** One permit as published: its id (`<id>.<i>`) and body. */
export interface PermitMessage {
  readonly msgID: string;
  readonly body: string;
}

/** Publishes of a pool's permits in flight at once: 10,000 permits in a few round trips, not 10,000. */
const publishWindow = 500;

/**
 * Publishes a pool's permits, ids `<id>.<i>`: a publish retried, or a second filler's, is not a
 * second permit. `onStored` is told each one's stream sequence as its answer comes (`duplicate`:
 * the server had one of that id within its duplicate window, and answers with its sequence,
 * whether that message is still stored or not); `onUnknown`
 * each one whose publish failed (stored or not: its answer may be what was lost). A window's
 * publishes all settle before the first failure is thrown: none is left in flight.
 */
export const publishPermits = async (
  js: JetStreamClient,
  subject: string,
  count: number,
  id: string,
  onStored?: (seq: number, duplicate: boolean) => void,
  onUnknown?: (permit: PermitMessage) => void,
): Promise<void> => {
  let failure: { error: unknown } | undefined;
  for (let from = 0; from < count && !failure; from += publishWindow) {
    const to = Math.min(count, from + publishWindow);
    const sent: Promise<unknown>[] = [];
    for (let i = from; i < to; i++) {
      const permit = { msgID: `${id}.${i}`, body: `${i}` };
      sent.push(
        js.publish(subject, permit.body, { msgID: permit.msgID }).then(
          (ack) => onStored?.(ack.seq, ack.duplicate),
          (error: unknown) => {
            failure ??= { error };
            onUnknown?.(permit);
          },
        ),
      );
    }
    await Promise.all(sent);
  }
  if (failure) throw failure.error;
};
