import type { JetStreamManager, MsgRequest, StoredMsg } from "@nats-io/jetstream";
import { isNoMessage, isNotFound } from "./streams.ts";

/** The first message stored on `subject` at or after sequence `from`; null when there is none. */
export const nextOnSubject = (
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  from: number,
): Promise<StoredMsg | null> =>
  // The server takes `next_by_subj` on STREAM.MSG.GET since 2.9; nats.js types it for direct gets only.
  jsm.streams
    .getMessage(stream, { seq: from, next_by_subj: subject } as unknown as MsgRequest)
    .catch((error: unknown) => {
      if (isNotFound(error)) return null;
      throw error;
    });

/**
 * Deletes the messages `stream` holds on `subject` one by one, oldest first,
 * never with a filtered purge: nats-server 2.9 moves every consumer whose
 * filter covers a purged subject past the stream's last message and forgets
 * its pending acks (server/stream.go `purge` → consumer.go `purge`), so a
 * queue's lane or results feed would skip everything stored then, for good.
 * A deleted message is only skipped. Each next message is found by subject
 * from the last one deleted (`next_by_subj`: on nats-server 2.9.10 a
 * `last_by_subj` after the subject's last message was deleted finds none
 * though older ones are left). Stops after `max` deletions, and at a message
 * at or past `below` (stored since the caller looked: it stays).
 */
export const deleteSubjectMessages = async (
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  { max, below = Number.POSITIVE_INFINITY }: { readonly max: number; readonly below?: number },
): Promise<void> => {
  let from = 1;
  for (let n = 0; n < max; n++) {
    const stored = await nextOnSubject(jsm, stream, subject, from);
    if (!stored || stored.seq >= below) return;
    // Gone since it was read (acked off a work-queue stream, deleted by another caller).
    await jsm.streams.deleteMessage(stream, stored.seq, false).catch((error: unknown) => {
      if (!isNoMessage(error) && !isNotFound(error)) throw error;
    });
    from = stored.seq + 1;
  }
};
