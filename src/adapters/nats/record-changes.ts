import { randomUUID } from "node:crypto";
import {
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type StreamInfo,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { JobRecord } from "../../kernel/job-record.ts";
import type { Logger } from "../../kernel/logger.ts";
import { abortRace } from "../../kernel/signals.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import { closeWhenEnded, pullLoop } from "./pull-loops.ts";
import { isNotFound } from "./streams.ts";

/**
 * Where a change watch goes on from after a pause, a lost consumer or a
 * reconnect: the last stream sequence handed over, and which stream that
 * sequence belongs to (its creation time: a bucket made again after the
 * server's store was reset starts its sequences over).
 */
export interface ChangeCursor {
  created?: string;
  seq?: number;
  /** The message read last (at `seq`): its key and when it was stored tell it from another at its sequence. */
  last?: StoredAt;
}

const operation = "job.record.changes";

/** How long a watch's consumer lives on the server with nobody pulling it (a process that died). */
const inactiveMs = 60_000;

/** What a reader's consumers are named on the bucket's stream (nats.js adds `_<n>`): an operator can tell them. */
const consumerName = (label: string) => `${label}_${randomUUID().replaceAll("-", "")}`;

/**
 * One round of `watchRecordChanges` (the port's): an ordered consumer on the
 * records bucket's stream from the cursor on. Not `DeliverPolicy.New`: the
 * ordered consumer, recreated by nats.js before it delivered anything, would
 * start again from sequence 1 and hand over every record; a start sequence
 * read from the stream keeps its place. When `onRecord` returns a promise
 * (the reader is full), the consumer is deleted, and made again from the
 * cursor once the promise settles: nothing piles up in nats.js's buffer
 * meanwhile, and a key written several times meanwhile is read at its
 * latest revision. Each consumer is deleted when it is done with (one left
 * behind by a process that died expires after a minute idle).
 */
export const watchRecordChanges = async (
  broker: NatsJobBroker,
  nc: NatsConnection,
  cursor: ChangeCursor,
  onRecord: (record: JobRecord, revision: number) => void | Promise<void>,
  signal: AbortSignal,
  log: Logger,
  onWatching?: (restarted: boolean) => void,
  label = "events",
): Promise<void> => {
  const { js, jsm } = await broker
    .handles(nc)
    .catch((error) => Promise.reject(broker.setups.afterFailure(nc, error, operation)));
  const stream = `KV_${broker.names.jobsBucket}`;
  try {
    while (!signal.aborted) {
      const restarted = await placeCursor(jsm, stream, cursor);
      const paused = await readChanges(
        js,
        jsm,
        nc,
        stream,
        broker.names.jobsBucket,
        cursor,
        onRecord,
        signal,
        {
          log,
          label,
          decode: (text) => broker.decodeWatched(text),
          dropLater: (stream, name, withinMs) => broker.dropConsumerLater(stream, name, withinMs),
          ...(onWatching ? { onWatching: () => onWatching(restarted) } : {}),
        },
      );
      if (!paused) return;
      const untilRoom = abortRace(signal);
      await untilRoom.race(paused.room.catch(() => undefined));
      untilRoom.release();
    }
  } catch (error) {
    throw broker.setups.afterFailure(nc, error, operation);
  }
};

/**
 * The first round starts at the stream's end ("from now on"); a stream made
 * again, or one that came back behind what was read (its last writes lost:
 * a server killed before it stored them, a backup restored), at its start.
 * True when the stream was made again, or went back, since the last round:
 * its sequences (the records' revisions) count again from below what was
 * read. Started after the last sequence read, the next round missed every
 * write stored at or below it.
 */
const placeCursor = async (jsm: JetStreamManager, stream: string, cursor: ChangeCursor): Promise<boolean> => {
  const info = await jsm.streams.info(stream);
  if (
    cursor.created === info.created &&
    cursor.seq !== undefined &&
    !(await wentBack(jsm, stream, info, cursor.seq, cursor.last))
  )
    return false;
  const restarted = cursor.created !== undefined;
  cursor.seq = restarted ? 0 : info.state.last_seq;
  cursor.created = info.created;
  return restarted;
};

/** A message's key and when it was stored (a delivered or a read message both have them). */
interface StoredAt {
  readonly subject: string;
  readonly time: Date;
}

/**
 * The stream holds less than was read (its last sequence below the one
 * read last), or another message at the sequence read last (stored after
 * it came back: its last writes lost, a write since took that sequence):
 * another key, or the same key stored more than a millisecond apart. The
 * same stored time reads 1 ms apart now and then: nats.js rounds a
 * delivery's nanoseconds (past what a number holds exactly) and truncates
 * a read message's. A message gone from there is no sign: a record written
 * again removes its older revision (one kept per key).
 */
export const wentBack = async (
  jsm: JetStreamManager,
  stream: string,
  info: StreamInfo,
  seq: number,
  read: StoredAt | undefined,
): Promise<boolean> => {
  if (info.state.last_seq < seq) return true;
  if (read === undefined || seq === 0) return false;
  const stored = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
  if (stored === null) return false;
  return stored.subject !== read.subject || Math.abs(stored.time.getTime() - read.time.getTime()) > 1;
};

/** Reads until the consumer is lost or `signal` aborts (undefined), or until the reader is full. */
const readChanges = async (
  js: JetStreamClient,
  jsm: JetStreamManager,
  nc: NatsConnection,
  stream: string,
  bucket: string,
  cursor: ChangeCursor,
  onRecord: (record: JobRecord, revision: number) => void | Promise<void>,
  signal: AbortSignal,
  {
    log,
    onWatching,
    label,
    decode,
    dropLater,
  }: {
    log: Logger;
    onWatching?: () => void;
    label: string;
    decode: (text: string) => JobRecord;
    /** Deletes a consumer in the background (`NatsJobBroker.dropConsumerLater`). */
    dropLater: (stream: string, name: string, withinMs: number) => void;
  },
): Promise<{ room: Promise<void> } | undefined> => {
  const consumer = await js.consumers.get(stream, {
    name_prefix: consumerName(label),
    // One subject as a string: a list needs nats-server 2.10.
    filter_subjects: `$KV.${bucket}.>`,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: (cursor.seq ?? 0) + 1,
    inactive_threshold: inactiveMs,
  });
  try {
    const messages = await consumer.consume({ ...pullLoop });
    const stopped = closeWhenEnded(messages, nc, signal);
    onWatching?.();
    try {
      for await (const m of messages) {
        // Moved first: a listener that throws fails this round, and the next goes on after it.
        cursor.seq = m.seq;
        cursor.last = m;
        const kvOperation = m.headers?.get("KV-Operation");
        if (kvOperation === "DEL" || kvOperation === "PURGE" || m.data.length === 0) continue;
        let record: JobRecord;
        try {
          record = decode(m.string());
        } catch (error) {
          // Passed over, as the memory broker does (a newer version's record, one written by
          // hand). It failed the round: the consumer made again after a pause that grew to 5 s
          // when such records came often, and the watch fell behind.
          log.warn({ err: error, subject: m.subject, seq: m.seq }, "job record not readable; passed over");
          continue;
        }
        const room = onRecord(record, m.seq);
        if (room) return { room };
      }
    } finally {
      stopped.dispose();
      await messages.close();
    }
  } finally {
    const name = (await consumer.info(true).catch(() => undefined))?.name;
    // Not deleted now (the connection down): deleted in the background once it is back. Left to
    // its inactive threshold, a reader ended while cut off left it for a minute (a review).
    if (name)
      await jsm.consumers.delete(stream, name).catch((error: unknown) => {
        if (isNotFound(error)) return;
        log.debug({ err: error, consumer: name }, "record-changes consumer not deleted; tried again");
        dropLater(stream, name, inactiveMs);
      });
  }
  return undefined;
};
