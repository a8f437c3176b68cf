import { AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { createInbox, type Msg, type NatsConnection, nuid } from "@nats-io/transport-node";
import type { ServerTime } from "../../kernel/clock.ts";
import { TransientBrokerError } from "../../kernel/errors.ts";
import { classifyNatsError, mayHaveApplied } from "./classify-error.ts";
import { parseServerTime } from "./server-facts.ts";
import { nanos } from "./streams.ts";

/**
 * Every key's latest value in a KV bucket, read as one pass over its stream
 * (an ordered consumer, last message per subject, in sequence order). A key
 * rewritten during the pass moves to the end of the stream (one message per
 * key is kept), so the pass reads up to the stream's last sequence, then asks
 * for it again and goes on until it has read up to a last sequence that did
 * not move: every key that lived through the pass is then read at its place
 * or at its new one. (Stopping at a count read at the start, or at the
 * consumer's pending count, which nats-server 2.9 reports too low for this
 * kind of consumer, missed such keys.) The run's deadline bounds a pass that
 * never catches up; its consumer is deleted at the end rather than left to
 * expire. `kv.keys()` and one `get` per key was N round trips, and the keys
 * iterator of nats.js 3 was seen never to end while keys were being written.
 */
export const scanBucket = async (
  js: JetStreamClient,
  jsm: JetStreamManager,
  bucket: string,
): Promise<Map<string, string>> => {
  const values = new Map<string, string>();
  for (const [key, entry] of await scanBucketEntries(js, jsm, bucket))
    if (entry.value !== undefined) values.set(key, entry.value);
  return values;
};

/**
 * The server's clock as the last scan read it (`scanBucketEntries`'s
 * `serverTime`), for as long as that reading holds: not when its monotonic
 * and wall ages disagree (this host slept, or its clock was set since), nor
 * once it is old (the two clocks drift). Then none, until a scan reads it again.
 */
export class ServerClockReading {
  #last: { readonly seen: ServerTime; readonly wallAt: number } | undefined;

  /** Takes a scan's reading (`Date.now()` at its `seenAt` kept beside it). */
  readonly take = (seen: ServerTime): void => {
    this.#last = { seen, wallAt: Date.now() - (performance.now() - seen.seenAt) };
  };

  /** Whether a scan has read the server's clock yet. */
  get taken(): boolean {
    return this.#last !== undefined;
  }

  /** The reading, while it holds; undefined before any, or when it may be off. */
  serverTime(): ServerTime | undefined {
    const last = this.#last;
    if (last === undefined) return undefined;
    const monoAge = performance.now() - last.seen.seenAt;
    return monoAge > 300_000 || Math.abs(Date.now() - last.wallAt - monoAge) > 500 ? undefined : last.seen;
  }
}

/** One key as `scanBucketEntries` read it: its value (none: a delete or purge marker) and revision. */
export interface BucketEntry {
  readonly value: string | undefined;
  readonly revision: number;
  /** When the server stored it, by the server's clock (epoch ms). */
  readonly storedAt: number;
}

/**
 * `scanBucket` with each key's revision, markers included (their value
 * undefined). "Up to the last sequence" is the bucket's last message, not
 * the stream's last sequence: a purge of the last key (a lease that goes)
 * leaves that sequence behind with no message to deliver, and a message
 * awaited there is purged before it is delivered — so when nothing has come
 * for a while, the pass asks again for the last message, and ends once it
 * has read up to it.
 */
export const scanBucketEntries = async (
  js: JetStreamClient,
  jsm: JetStreamManager,
  bucket: string,
  /** Only the keys under this filter (`live.>`); every key by default. */
  keys = ">",
  /**
   * Told the server's clock: the creation stamp of the pass's consumer, and
   * `performance.now()` before its creation was asked for (the server's time
   * then is no later than that stamp, and earlier by at most the round trip).
   */
  serverTime?: (time: ServerTime) => void,
): Promise<Map<string, BucketEntry>> => {
  const stream = `KV_${bucket}`;
  const prefix = `$KV.${bucket}.`;
  const entries = new Map<string, BucketEntry>();
  const lastSeq = async () =>
    (await jsm.streams.getMessage(stream, { last_by_subj: `${prefix}${keys}` }))?.seq ?? 0;
  let target = await lastSeq();
  if (target === 0) return entries;
  // Before the consumer's creation is asked for: its stamp falls after this moment. Taken once
  // the answer came, a slow answer (a loaded server, a slow link, a busy event loop) read as this
  // runtime's clock ahead by as long as it took, and a right clock was taken back by it.
  const sentAt = performance.now();
  // Named here, not by nats.js: a create the server made but answered after the client gave up
  // on it (a loaded host) is deleted all the same. Its idle limit is the scan's: what no delete
  // reaches (the client closed under the scan) goes by itself soon, not after nats.js's 5 min.
  const namePrefix = nuid.next();
  const consumer = await js.consumers
    .get(stream, {
      name_prefix: namePrefix,
      filter_subjects: `${prefix}${keys}`,
      deliver_policy: DeliverPolicy.LastPerSubject,
      inactive_threshold: scanIdleMs,
    })
    .catch(async (error: unknown) => {
      if (mayHaveApplied(error)) await jsm.consumers.delete(stream, `${namePrefix}_1`).catch(() => undefined);
      throw error;
    });
  if (serverTime) {
    const roundTripMs = performance.now() - sentAt;
    const created = parseServerTime((await consumer.info(true)).created);
    if (Number.isFinite(created)) serverTime({ at: created, seenAt: sentAt, roundTripMs });
  }
  const messages = await consumer.consume();
  let read = 0;
  /** Read up to the bucket's last message: the only end of a scan that read it all. */
  let through = false;
  let quietSince = Date.now();
  let asking = false;
  const quiet = setInterval(() => {
    if (asking || Date.now() - quietSince < quietMs) return;
    asking = true;
    lastSeq()
      .then((last) => {
        target = last;
        if (read < last) return;
        through = true;
        void messages.close();
      })
      // Not answered: asked again after the next quiet spell; the run's deadline bounds the pass.
      .catch(() => undefined)
      .finally(() => {
        asking = false;
        quietSince = Date.now();
      });
  }, quietMs / 2);
  try {
    for await (const m of messages) {
      quietSince = Date.now();
      const key = m.subject.slice(prefix.length);
      const operation = m.headers?.get("KV-Operation");
      const marker = operation === "DEL" || operation === "PURGE";
      entries.set(key, {
        value: marker ? undefined : m.string(),
        revision: m.seq,
        storedAt: Math.floor(m.info.timestampNanos / 1e6),
      });
      read = m.seq;
      if (m.seq < target) continue;
      target = await lastSeq();
      if (m.seq < target) continue;
      through = true;
      break;
    }
    // The messages ended short of the last without an error: their client closed (its
    // reconnects given up, or reset). Part of the bucket taken for all of it: a schedule or a
    // lease not in it was as good as removed.
    if (!through)
      throw new TransientBrokerError({
        message: `scan of bucket ${bucket} ended before sequence ${target} (its client closed)`,
        operation: "kv.scan",
      });
  } catch (error) {
    // Or they end with the close itself (nats.js's check of its consumer met the closed
    // client): the same end, told the same way.
    throw classifyNatsError(error, "kv.scan");
  } finally {
    clearInterval(quiet);
    await messages.close();
    const name = (await consumer.info(true).catch(() => undefined))?.name;
    // Not deleted (gone already, or not now): an ordered consumer expires by itself when idle.
    if (name) await jsm.consumers.delete(stream, name).catch(() => undefined);
  }
  return entries;
};

/** How long a bucket scan waits for a message before it asks whether one is still to come. */
const quietMs = 200;
/** A scan's consumer, left idle this long (its scan gone without deleting it), goes by itself. */
const scanIdleMs = 30_000;

/** What `pageBucket` reads: where to start, how much to keep and read, which values to keep. */
export interface BucketPage<T> {
  /** The stream sequence the previous page ended at (0: from the start). */
  readonly after: number;
  /** Items kept at most. */
  readonly limit: number;
  /** Messages read at most, kept or not. */
  readonly maxScan: number;
  /** The item a stored value of `key` gives, or undefined to skip it. */
  readonly pick: (key: string, value: string) => T | undefined;
}

/**
 * One page of a KV bucket of history 1, in the order its keys were last
 * written: every message still in its stream is a key's current value (or
 * a delete marker, skipped), so reading the stream from sequence `after + 1`
 * on reads the current values that follow the last page (its consumer starts
 * at `after` itself, and hands back what is stored there now:
 * `afterStored`), and the cost is
 * what the page reads, not what the bucket holds. A throw-away consumer
 * (start sequence, no acks, in memory) is pulled with `no_wait` in growing
 * batches (the server answers at once with what it has, then a status: the
 * end of the stream for now) and deleted when the page is read; if that
 * delete fails it expires after 30 s without pulls. `next` is the sequence
 * of the last message read; it is absent when the read reached the end. A
 * key rewritten while pages are read moves past the cursor: it is read
 * again, never skipped.
 *
 * A KV purge (a subject rollup) moves every unfiltered consumer of the
 * stream to the purge's marker on nats-server before 2.10.11 (fixed by
 * "properly handle filtered purge with a consumer with a wider filtered
 * subject"): the keys between would be skipped. So a purge marker not seen
 * before, read after a gap, makes the page read on from the last message it
 * read with a new consumer, which that purge, done before, cannot move.
 */
export const pageBucket = async <T>(
  nc: NatsConnection,
  jsm: JetStreamManager,
  bucket: string,
  page: BucketPage<T>,
): Promise<BucketPageRead<T>> => {
  const stream = `KV_${bucket}`;
  /** A key's subject is `$KV.<bucket>.<key>`. */
  const keyAt = `$KV.${bucket}.`.length;
  const items: T[] = [];
  let read = 0;
  let last = page.after;
  let lastStored: StoredEntry | undefined;
  let afterStored: StoredEntry | undefined;
  let asked = 0;
  /** The last purge marker read: a consumer made after reading it was not moved by it. */
  let purgeSeen = 0;
  const stored = (m: { seq: number; msg: Msg }): StoredEntry => ({
    key: m.msg.subject.slice(keyAt),
    stamp: storedStampOf(m.msg.reply ?? ""),
  });
  const ended = (next: boolean): BucketPageRead<T> => ({
    items,
    ...(next ? { next: last, ...(lastStored ? { nextStored: lastStored } : {}) } : {}),
    ...(afterStored ? { afterStored } : {}),
  });
  let consumer = await pageConsumer(jsm, stream, last);
  try {
    for (;;) {
      const room = Math.min(page.maxScan - read, page.limit - items.length);
      // One more than the page may take: a page that stops just before the stream's end says
      // so (no `next`). Batches double while a filter keeps few: a sparse page takes a few
      // pulls, not one per record.
      asked = room === 0 ? 1 : Math.min(page.maxScan - read, Math.max(room, asked * 2)) + 1;
      const { messages, drained } = await pullNow(nc, stream, consumer, asked);
      let movedBy = 0;
      for (const m of messages) {
        // The entry the page starts after, read again (each consumer starts at it): what is
        // stored there now (`afterStored`), not a record of the page.
        if (m.seq <= last) {
          if (m.seq === page.after && afterStored === undefined) afterStored = stored(m);
          continue;
        }
        if (items.length === page.limit || read === page.maxScan) return ended(true);
        const operation = m.msg.headers?.get("KV-Operation");
        if (operation === "PURGE" && m.seq > purgeSeen && m.seq > last + 1) {
          movedBy = m.seq;
          break;
        }
        read++;
        last = m.seq;
        lastStored = stored(m);
        if (operation === "DEL" || operation === "PURGE") continue;
        const item = page.pick(lastStored.key, m.msg.string());
        if (item !== undefined) items.push(item);
      }
      if (movedBy > 0) {
        purgeSeen = movedBy;
        await dropConsumer(jsm, stream, consumer);
        consumer = await pageConsumer(jsm, stream, last);
        asked = 0;
      } else if (drained) return ended(false);
    }
  } finally {
    await dropConsumer(jsm, stream, consumer);
  }
};

/** A stored entry as a page read it: its key, and when it was stored (the server's nanoseconds, as sent). */
interface StoredEntry {
  readonly key: string;
  readonly stamp: string;
}

/** What `pageBucket` read. */
export interface BucketPageRead<T> {
  readonly items: T[];
  /** Where the next page starts (absent: the read reached the end), and the entry stored there. */
  readonly next?: number;
  readonly nextStored?: StoredEntry;
  /**
   * The entry at `after` as stored now, when it still is: a store that came back behind what
   * was read (a backup restored) may hold another there. Absent: none there now (its key was
   * written again since, which removes it, or the stream ends before it).
   */
  readonly afterStored?: StoredEntry;
}

/**
 * A consumer that reads the stream from `after` on (the entry the page starts after, read
 * again to see that it is still the one read before), once, without acks.
 */
const pageConsumer = async (jsm: JetStreamManager, stream: string, after: number): Promise<string> => {
  // No filter subject: the bucket's stream holds only its keys, and the server counts an
  // unfiltered consumer's pending messages without walking the stream.
  const { name } = await jsm.consumers.add(stream, {
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: Math.max(after, 1),
    mem_storage: true,
    inactive_threshold: nanos(30_000),
  });
  return name;
};

// Not deleted now (connection lost): it expires by itself once idle.
const dropConsumer = (jsm: JetStreamManager, stream: string, name: string): Promise<unknown> =>
  jsm.consumers.delete(stream, name).catch(() => undefined);

/**
 * Up to `batch` messages the consumer has now. `drained`: the server said
 * it had no more (a 404 or 408 status after what it had), rather than
 * stopping at `batch`. A consumer that is gone answers nothing: after
 * `timeoutMs` that is a transient error, as is any other status, and the
 * operation's retry reads the page again with another consumer.
 */
const pullNow = async (
  nc: NatsConnection,
  stream: string,
  consumer: string,
  batch: number,
  timeoutMs = 5000,
): Promise<{ messages: { seq: number; msg: Msg }[]; drained: boolean }> => {
  const inbox = createInbox();
  const sub = nc.subscribe(inbox);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    sub.unsubscribe();
  }, timeoutMs);
  const messages: { seq: number; msg: Msg }[] = [];
  let status = "";
  try {
    nc.publish(`$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`, JSON.stringify({ batch, no_wait: true }), {
      reply: inbox,
    });
    for await (const msg of sub) {
      const seq = msg.reply ? streamSequenceOf(msg.reply) : undefined;
      if (seq === undefined) {
        // 404 no messages, 408 request done: drained. Another status (409 consumer deleted…) says nothing of the end.
        const code = msg.headers?.code;
        if (code === 404 || code === 408) return { messages, drained: true };
        status = `${code ?? "?"} ${msg.headers?.description ?? ""}`.trim();
        break;
      }
      messages.push({ seq, msg });
      if (messages.length >= batch) return { messages, drained: false };
    }
  } finally {
    clearTimeout(timer);
    sub.unsubscribe();
  }
  // Ended without the server's word that it had no more (no answer, another status, the
  // connection closed): not known to be drained, so not the end of the page.
  const why = timedOut ? `no answer in ${timeoutMs} ms` : status ? `status ${status}` : "ended early";
  throw new TransientBrokerError({
    message: `pull from consumer ${consumer} of ${stream}: ${why}`,
    operation: "kv.page.pull",
  });
};

/** The stream sequence in a delivery's reply subject (`$JS.ACK.[<domain>.<account>.]<stream>.<consumer>.<delivered>.<sseq>.…`). */
/** When a delivered message was stored: the timestamp its ack subject carries, as sent (nanoseconds). */
const storedStampOf = (reply: string): string => {
  const tokens = reply.split(".");
  return tokens[tokens.length === 9 ? 7 : 9] ?? "";
};

const streamSequenceOf = (reply: string): number | undefined => {
  const tokens = reply.split(".");
  if (tokens[0] !== "$JS" || tokens[1] !== "ACK") return undefined;
  const seq = Number(tokens[tokens.length === 9 ? 5 : 7]);
  return Number.isSafeInteger(seq) && seq > 0 ? seq : undefined;
};
