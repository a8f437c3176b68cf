import {
  AckPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { type MemoryServer, memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { waitUntil } from "./wait.ts";

/**
 * What the server holds for a job, read past the runtime: `results()`
 * de-duplicates by index, so a check of "each task counted once" made
 * through it cannot fail. These readers hand back every stored entry,
 * duplicates included.
 */

/** One entry of a results message, as the server holds it. */
export interface RawResult {
  readonly i: number;
  readonly ok?: boolean;
  /** A success's result. */
  readonly r?: unknown;
  /** The submit whose task it answers (a 1-task lane job's). */
  readonly s?: string;
  readonly dead?: boolean;
  readonly redrive?: boolean;
}

/**
 * Messages `stream` holds on `subject`. 0 only when there are none: a
 * stream that does not exist (yet, or any more) holds none; any other
 * failure is thrown, so a broken read cannot pass for "nothing left".
 */
export const storedCount = async (jsm: JetStreamManager, stream: string, subject: string) => {
  try {
    const info = await jsm.streams.info(stream, { subjects_filter: subject });
    return info.state.subjects?.[subject] ?? 0;
  } catch (error) {
    if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return 0;
    throw error;
  }
};

/** One results message as the server stores it: its entries and when the server stored it. */
export interface RawResultsMessage {
  /** The server's timestamp of the message, in ms since the epoch. */
  readonly at: number;
  readonly entries: readonly RawResult[];
}

/**
 * Every message `stream` stores on `subject` (one subject: nats-server 2.9 has no filter list),
 * in order, with the server's timestamps: a consumer of the reader's own, deleted after.
 */
export const natsRawMessages = async (
  nc: NatsConnection,
  stream: string,
  subject: string,
): Promise<Array<{ readonly at: number; readonly body: string }>> => {
  const jsm = await jetstreamManager(nc);
  const stored = await storedCount(jsm, stream, subject);
  if (stored === 0) return [];
  const { name } = await jsm.consumers.add(stream, {
    filter_subject: subject,
    ack_policy: AckPolicy.None,
    inactive_threshold: 60_000_000_000,
  });
  try {
    const consumer = await jetstream(nc).consumers.get(stream, name);
    const messages: Array<{ at: number; body: string }> = [];
    for (let n = 0; n < stored; n++) {
      const msg = await consumer.next({ expires: 5_000 });
      if (!msg) throw new Error(`message ${n + 1} of ${stored} on ${subject} not delivered`);
      messages.push({ at: msg.info.timestampNanos / 1_000_000, body: msg.string() });
    }
    return messages;
  } finally {
    await jsm.consumers.delete(stream, name);
  }
};

/**
 * Every results message stored for the job on a nats-server, in order, with
 * the server's timestamps: a consumer of its own on `<prefix>_results`,
 * filtered on `<prefix>.results.<queue>.<jobId>`, as the job oracle test
 * reads them.
 */
export const natsRawResultsMessages = async (
  nc: NatsConnection,
  queue: string,
  jobId: string,
  prefix = "jetstate",
): Promise<RawResultsMessage[]> => {
  const names = brokerNames(prefix);
  const messages = await natsRawMessages(nc, names.resultsStream, names.resultsSubject(queue, jobId));
  return messages.map((m) => ({ at: m.at, entries: JSON.parse(m.body) as RawResult[] }));
};

/** Every results entry stored for the job on a nats-server, in order (see natsRawResultsMessages). */
export const natsRawResults = async (
  nc: NatsConnection,
  queue: string,
  jobId: string,
  prefix = "jetstate",
): Promise<RawResult[]> => (await natsRawResultsMessages(nc, queue, jobId, prefix)).flatMap((m) => m.entries);

/** Every results entry the memory server stores for the job: its own log, not a broker's reader. */
export const memoryRawResults = (server: MemoryServer, queue: string, jobId: string): RawResult[] => {
  const state = memoryServerState(server);
  return state.results
    .read(state.names.resultsSubject(queue, jobId))
    .flatMap((m) => JSON.parse(m.body) as RawResult[]);
};

/** How many times each task index appears. */
export const tally = (indexes: readonly number[]): Map<number, number> => {
  const counts = new Map<number, number>();
  for (const i of indexes) counts.set(i, (counts.get(i) ?? 0) + 1);
  return counts;
};

/** What the stored entries say of task `i` last: answered, dead, or taken back by a redrive's marker. */
export const lastSaid = (entries: readonly RawResult[], i: number): string | undefined =>
  entries
    .filter((e) => e.i === i)
    .map((e) => (e.redrive ? "taken back" : e.ok ? "done" : e.dead ? "dead" : "failed"))
    .at(-1);

/** Resolves once JetStream answers `nc` (a test's own client, back on a server started again). */
export const untilJetStreamAnswers = (nc: NatsConnection): Promise<void> =>
  waitUntil(
    () =>
      jetstreamManager(nc).then(
        () => true,
        () => false,
      ),
    { timeoutMs: 15_000, message: "JetStream answering the test's client again" },
  );
