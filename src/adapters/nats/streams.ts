import { JetStreamApiError, type JetStreamManager, type StreamInfo } from "@nats-io/jetstream";
import { type KV, Kvm, type KvOptions } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../../kernel/logger.ts";
import { RefusedCreates } from "./refused-creates.ts";

/** JetStream durations are nanoseconds. */
export const nanos = (ms: number) => Math.round(ms * 1_000_000);

/**
 * A stream's duplicate window (the two minutes a retried publish with the
 * same message id is kept once), never longer than its max age: the server
 * refuses a window above the max age ("duplicates window can not be larger
 * then max age"), which a `jobs.retentionMs` under two minutes asked for.
 */
export const duplicateWindowWithin = (maxAgeMs: number): { max_age: number; duplicate_window: number } => ({
  max_age: nanos(maxAgeMs),
  duplicate_window: nanos(Math.min(120_000, maxAgeMs)),
});

/**
 * The replica count jetstate gives every stream and bucket it creates, and
 * the report of existing ones that have another: jetstate never changes an
 * existing stream (another runtime or an operator made it, maybe on
 * purpose), but a stream left at R1 on a cluster loses its data with one
 * disk, so it is said once per stream and runtime, with the command that
 * changes it.
 */
export class Replicas {
  readonly wanted: number;
  /**
   * The creates this runtime was refused (`ensureStream`, `ensureBucket`):
   * here because every create is handed this runtime's `Replicas`.
   */
  readonly refused: RefusedCreates;
  readonly #log: Logger;
  readonly #reported = new Set<string>();

  constructor(wanted: number, log: Logger) {
    this.wanted = wanted;
    this.refused = new RefusedCreates(log);
    this.#log = log;
  }

  /** Warns (once per stream) when the stream's replica count is not the one wanted. */
  check(stream: StreamInfo): void {
    const name = stream.config.name;
    // 0 is the server's "not given": one replica.
    const replicas = stream.config.num_replicas || 1;
    if (replicas === this.wanted || this.#reported.has(name)) return;
    this.#reported.add(name);
    this.#log.warn(
      {
        stream: name,
        replicas,
        wanted: this.wanted,
        fix: `nats stream edit ${name} --replicas ${this.wanted}`,
      },
      `stream ${name} has ${replicas} replica(s), not the ${this.wanted} this runtime wants; ` +
        `jetstate never changes an existing stream: run \`nats stream edit ${name} --replicas ${this.wanted}\``,
    );
  }
}

/**
 * Creates the stream unless it exists, with the wanted replica count. An
 * existing stream is used as it is (another runtime may have made it with
 * other limits), and only looked at: a process allowed to read a stream but
 * not to create one works once it exists. Two runtimes racing to create it
 * both end up using the one that won. A replica count other than the one
 * wanted is reported (`Replicas.check`). Resolves with the stream as it is.
 */
export const ensureStream = async (
  jsm: JetStreamManager,
  config: Parameters<JetStreamManager["streams"]["add"]>[0],
  replicas: Replicas,
): Promise<StreamInfo> => {
  const stream = await findOrAddStream(jsm, { ...config, num_replicas: replicas.wanted }, replicas.refused);
  replicas.check(stream);
  replicas.refused.exists(stream.config.name);
  return stream;
};

const findOrAddStream = async (
  jsm: JetStreamManager,
  config: Parameters<JetStreamManager["streams"]["add"]>[0],
  refused: RefusedCreates,
): Promise<StreamInfo> => {
  try {
    return await jsm.streams.info(config.name);
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  // Refused a moment ago: looked at only, until it is there (or a minute has passed).
  if (!refused.mayAsk(config.name)) throw refused.missing(config.name);
  try {
    return await jsm.streams.add(config);
  } catch (error) {
    // Lost the race to a runtime with other settings: theirs stands. No such stream after all:
    // the add's own error is the one that explains.
    return await jsm.streams
      .info(config.name)
      .catch(() => Promise.reject(refused.failed(config.name, error)));
  }
};

/**
 * Opens the KV bucket, creating it (with the wanted replica count) unless it
 * exists; an existing bucket's stream is checked like any other stream.
 *
 * Reads go to the bucket's stream leader, never a direct get: on a
 * replicated bucket a direct get may be answered by a replica that is behind
 * (one catching up after a restart). The chaos suite read a job's record as
 * `running` there after the job's end had been stored, and a compare-and-set
 * built on such a read fails until the replica catches up. Made this way, the
 * bucket's stream refuses direct gets to every client, and nats.js reads
 * through the leader (`$JS.API.STREAM.MSG.GET`) even on a bucket made by
 * someone else with direct gets allowed.
 */
export const ensureBucket = async (
  nc: NatsConnection,
  jsm: JetStreamManager,
  bucket: string,
  options: Partial<KvOptions>,
  replicas: Replicas,
): Promise<KV> => {
  const kvm = new Kvm(nc);
  const stream = `KV_${bucket}`;
  // Its create refused a moment ago: looked at only, until it is there (or a minute has passed).
  if (!replicas.refused.mayAsk(stream) && !(await streamInfoIfAny(jsm, stream)))
    throw replicas.refused.missing(stream);
  const kv = await kvm
    .create(bucket, { ...options, replicas: replicas.wanted, allow_direct: false })
    // Lost the race to another runtime's create (the server says "name already in use with a
    // different configuration", or "subjects overlap"): theirs stands, as for a stream. No such
    // bucket after all: the create's own error is the one that explains.
    .catch(async (error: unknown) => {
      const made = await jsm.streams.info(stream).catch(() => undefined);
      if (!made) throw replicas.refused.failed(stream, error);
      return kvm.open(bucket, { allow_direct: false });
    });
  replicas.check(await jsm.streams.info(stream));
  replicas.refused.exists(stream);
  return kv;
};

/** Stream, consumer or message not found. */
export const isNotFound = (error: unknown): boolean =>
  error instanceof JetStreamApiError &&
  (error.code === 10014 || error.code === 10059 || error.status === 404);

/**
 * A message delete by sequence that found nothing there: removed already,
 * replaced by a later write of its key (a history-1 bucket keeps one message a
 * key), or past the stream's end. nats-server 2.9 says so three ways: 10043
 * ("sequence N not found") behind a message still stored, 10057 ("no message
 * found") before the first one, 10057 ("stream store EOF") past the last.
 */
export const isNoMessage = (error: unknown): boolean =>
  error instanceof JetStreamApiError &&
  (error.code === 10043 || (error.code === 10057 && /no message found|EOF/.test(error.message)));

/**
 * Erases the message at `seq` of `bucket`'s stream when it is `key`'s value
 * (or, with `what: "marker"`, its delete marker); false when it is not there
 * (rewritten since, removed, or another key's). An erase, not a KV delete:
 * no marker is left behind, and a server killed right after does not bring
 * the message back (a delete without erasure may come back).
 */
export const eraseEntryAt = async (
  jsm: JetStreamManager,
  bucket: string,
  key: string,
  seq: number,
  what: "value" | "marker",
): Promise<boolean> => {
  const stream = `KV_${bucket}`;
  const stored = await jsm.streams.getMessage(stream, { seq }).catch((error: unknown) => {
    if (isNotFound(error)) return null;
    throw error; // not an answer (a timeout): the operation tries again
  });
  const operation = stored?.header?.get("KV-Operation");
  const marker = operation === "DEL" || operation === "PURGE";
  if (stored?.subject !== `$KV.${bucket}.${key}` || marker !== (what === "marker")) return false;
  return jsm.streams.deleteMessage(stream, seq, true).catch((error: unknown) => {
    if (isNoMessage(error)) return false;
    throw error;
  });
};

/** A stream's info, or undefined when the stream is not there (any other failure is thrown). */
export const streamInfoIfAny = (
  jsm: JetStreamManager,
  stream: string,
  query?: Parameters<JetStreamManager["streams"]["info"]>[1],
): Promise<StreamInfo | undefined> =>
  jsm.streams.info(stream, query).catch((error: unknown) => {
    if (!isNotFound(error)) throw error;
    return undefined;
  });

/** Names of the streams whose name starts with `namePrefix` (one queue's stream each). */
export const streamNamesStartingWith = async (
  jsm: JetStreamManager,
  namePrefix: string,
): Promise<string[]> => {
  const names: string[] = [];
  for await (const name of jsm.streams.names()) if (name.startsWith(namePrefix)) names.push(name);
  return names;
};
