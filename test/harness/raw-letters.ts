import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { type MemoryServer, memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { natsRawMessages } from "./raw-results.ts";

/**
 * A job's dead letters and a stored task message, as the server holds them,
 * read past the runtime (its `deadLetters()` decodes and filters them): the
 * raw bodies, parsed, for a test to check field by field.
 */

/** A dead letter as stored: only the fields the tests here read. */
export interface RawLetter {
  readonly index: number;
  readonly source: string;
  readonly error: string;
  /** The submit whose task died (a 1-task lane job's). */
  readonly submit?: string;
}

const names = brokerNames("jetstate");

/** Every dead letter stored for the job on a nats-server, in order. */
export const natsRawLetters = async (
  nc: NatsConnection,
  queue: string,
  jobId: string,
): Promise<RawLetter[]> =>
  (await natsRawMessages(nc, names.deadStream, names.deadSubject(queue, jobId))).map(
    (m) => JSON.parse(m.body) as RawLetter,
  );

/** Every dead letter the memory server stores for the job: its own log. */
export const memoryRawLetters = (server: MemoryServer, queue: string, jobId: string): RawLetter[] =>
  memoryServerState(server)
    .deadLetters.read(names.deadSubject(queue, jobId))
    .map((m) => JSON.parse(m.body) as RawLetter);

/** The body of the lane task stored for the job on a nats-server, parsed (its last message on the subject). */
export const natsRawLaneTask = async (
  nc: NatsConnection,
  queue: string,
  jobId: string,
): Promise<{ readonly s?: string }> => {
  const jsm = await jetstreamManager(nc);
  const m = await jsm.streams.getMessage(names.tasksStream(queue), {
    last_by_subj: names.laneSubject(queue, jobId),
  });
  if (!m) throw new Error(`no lane task stored for ${jobId}`);
  return m.json();
};

/** The body of the lane task the memory server stores for the job, parsed. */
export const memoryRawLaneTask = (
  server: MemoryServer,
  queue: string,
  jobId: string,
): { readonly s?: string } => {
  const { tasks } = memoryServerState(server);
  const seq = tasks.seqsOf(names.laneSubject(queue, jobId)).at(-1);
  const stored = seq === undefined ? undefined : tasks.get(seq);
  if (!stored) throw new Error(`no lane task stored for ${jobId}`);
  return JSON.parse(stored.body);
};
