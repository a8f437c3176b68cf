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

/** How many deletions `deleteSubjectMessages` has out at once. */
const deletesInFlight = 64;

/**
 * Deletes the messages `stream` holds on `subject` one by one, oldest first,
 * never with a filtered purge: nats-server 2.9 moves every consumer whose
 * filter covers a purged subject past the stream's last message and forgets
 * its pending acks (server/stream.go `purge` → consumer.go `purge`), so a
 * queue's lane or results feed would skip everything stored then, for good.
 * A deleted message is only skipped. Each next message is found by subject
 * from the last one found (`next_by_subj`: on nats-server 2.9.10 a
 * `last_by_subj` after the subject's last message was deleted finds none
 * though older ones are left); its deletion is not waited for before the
 * next read (up to `deletesInFlight` out at once: a 1,000-task lane job's
 * cancel made 2,000 round trips one after the other). Stops after `max`
 * deletions, and at a message at or past `below` (stored since the caller
 * looked: it stays). Resolves once every deletion is answered; rejects with
 * the first that failed (a message gone since it was read is not a failure:
 * acked off a work-queue stream, or deleted by another caller).
 */
export const deleteSubjectMessages = async (
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  { max, below = Number.POSITIVE_INFINITY }: { readonly max: number; readonly below?: number },
): Promise<void> => {
  const out = new Set<Promise<void>>();
  let failed: { readonly error: unknown } | undefined;
  const remove = (seq: number) => {
    const deleting: Promise<void> = jsm.streams.deleteMessage(stream, seq, false).then(
      () => {
        out.delete(deleting);
      },
      (error: unknown) => {
        out.delete(deleting);
        if (!isNoMessage(error) && !isNotFound(error)) failed ??= { error };
      },
    );
    out.add(deleting);
  };
  try {
    let from = 1;
    for (let n = 0; n < max && !failed; n++) {
      const stored = await nextOnSubject(jsm, stream, subject, from);
      if (!stored || stored.seq >= below) break;
      remove(stored.seq);
      if (out.size >= deletesInFlight) await Promise.race(out);
      from = stored.seq + 1;
    }
  } finally {
    // Never left running past the call (nor a failure of one left unheard).
    await Promise.all(out);
  }
  if (failed) throw failed.error;
};

/**
 * Removes the messages at `seqs` of `stream` (erased), `window` at a time; one removed already
 * is no error. One round trip after the other, thousands outlasted an operation's deadline.
 */
export const deleteMessages = async (
  jsm: JetStreamManager,
  stream: string,
  seqs: readonly number[],
  window = 64,
): Promise<void> => {
  for (let from = 0; from < seqs.length; from += window) {
    await Promise.all(
      seqs.slice(from, from + window).map((seq) =>
        jsm.streams.deleteMessage(stream, seq).catch((error: unknown) => {
          if (!isNoMessage(error)) throw error;
        }),
      ),
    );
  }
};
