/**
 * The server's own view of a queue's lane, read with a connection of the
 * test's own: its consumers, the task messages stored on a subject, a job's
 * record as stored. The lane tests' oracle, never jetstate's view of itself.
 */
import { type ConsumerInfo, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { brokerNames } from "../../src/adapters/names.ts";
import { decodeRecord } from "../../src/kernel/job-record-codec.ts";

export const laneOracle = (nc: () => NatsConnection, prefix = "jetstate") => {
  const names = brokerNames(prefix);
  return {
    names,
    /** The server's consumers on the queue's tasks stream. */
    consumersOf: async (queue: string): Promise<ConsumerInfo[]> => {
      const jsm = await jetstreamManager(nc());
      const all: ConsumerInfo[] = [];
      for await (const c of jsm.consumers.list(names.tasksStream(queue))) all.push(c);
      return all;
    },
    /** Messages stored on a subject of the queue's tasks stream (a wildcard: on every subject under it). */
    stored: async (queue: string, subject: string): Promise<number> => {
      const jsm = await jetstreamManager(nc());
      const info = await jsm.streams.info(names.tasksStream(queue), { subjects_filter: subject });
      return Object.values(info.state.subjects ?? {}).reduce((sum, n) => sum + n, 0);
    },
    /** The job's record as stored in the bucket, read raw. */
    storedRecord: async (id: string) => {
      const jsm = await jetstreamManager(nc());
      const m = await jsm.streams.getMessage(`KV_${names.jobsBucket}`, {
        last_by_subj: `$KV.${names.jobsBucket}.${id}`,
      });
      return m ? decodeRecord(m.string()) : undefined;
    },
  };
};
