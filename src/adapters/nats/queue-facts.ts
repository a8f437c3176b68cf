import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { inBatches } from "../../kernel/batches.ts";
import { scanBucket } from "./bucket-reads.ts";
import { isPermissionViolation } from "./classify-error.ts";
import type { NatsContext } from "./nats-context.ts";
import { isNotFound } from "./streams.ts";

/** A durable consumer as found on the server. */
export interface ConsumerFacts {
  /** -1: a message is delivered for ever (a permit never used up). */
  readonly maxDeliver: number;
}

/** A consumer to look up: `name` on `stream`. */
export interface ConsumerRef {
  readonly stream: string;
  readonly name: string;
}

/** How `readConsumers` keys what it found. */
export const consumerKey = (c: ConsumerRef): string => `${c.stream}/${c.name}`;

/**
 * What `rt.admin.diagnose()` reads of the queues' own resources, once the
 * stream listing said which exist: each a call or a pass per queue, never
 * per job. The API decides what is a problem. What this identity may not
 * read (an admin of some queues lists every queue's streams) is left out,
 * not known to be wrong.
 */

/**
 * A manager for one read, without the `$JS.API.INFO` call nats.js makes by default:
 * `readServerFacts` asked it once for the run, and one per read was a round trip each
 * (half of doctor's calls with many queues far from the server).
 */
const diagnoseManager = (nc: NatsConnection) => jetstreamManager(nc, { checkAPI: false });

/** `read`'s answer, or `refused` when the server refuses this identity the call. */
const unlessRefused = async <A>(read: () => Promise<A>, refused: A): Promise<A> => {
  try {
    return await read();
  } catch (error) {
    if (isPermissionViolation(error)) return refused;
    throw error;
  }
};

/** Every key's value in a bucket (the queues' settings: one key a queue). */
export const readBucketValues = (core: NatsContext, bucket: string): Promise<ReadonlyMap<string, string>> =>
  core.run("admin.diagnose.settings", async (nc) =>
    scanBucket(jetstream(nc), await diagnoseManager(nc), bucket),
  );

/** `readSubjectCounts`' answer. */
export interface SubjectCounts {
  /** Messages on each subject (one absent: none). */
  readonly counts: ReadonlyMap<string, number>;
}

/** How many messages each subject of `stream` matching `filter` holds; undefined when refused. */
export const readSubjectCounts = (
  core: NatsContext,
  stream: string,
  filter: string,
): Promise<SubjectCounts | undefined> =>
  core.run("admin.diagnose.pools", async (nc) => {
    const jsm = await diagnoseManager(nc);
    const info = await unlessRefused(() => jsm.streams.info(stream, { subjects_filter: filter }), undefined);
    if (info === undefined) return undefined;
    return { counts: new Map(Object.entries(info.state.subjects ?? {})) };
  });

/**
 * Whether `stream` holds a message on a subject matching `filter` (a wildcard
 * works in `last_by_subj` on 2.9); undefined when refused. One message read,
 * however many subjects match: a stream info with a subject filter lists
 * each one (a lane's: one per job waiting).
 */
export const readAnyMessage = (
  core: NatsContext,
  stream: string,
  filter: string,
): Promise<boolean | undefined> =>
  core.run("admin.diagnose.messages", async (nc) => {
    const jsm = await diagnoseManager(nc);
    const last = await unlessRefused(
      () => jsm.streams.getMessage(stream, { last_by_subj: filter }),
      undefined,
    );
    return last === undefined ? undefined : last !== null;
  });

/** Each consumer's facts by `consumerKey`; null: not on the server; absent: refused to this identity. */
export const readConsumers = async (
  core: NatsContext,
  consumers: readonly ConsumerRef[],
): Promise<ReadonlyMap<string, ConsumerFacts | null>> => {
  const found = new Map<string, ConsumerFacts | null>();
  // One operation each: a deadline for all of them would not hold many queues far from the server;
  // a batch at a time, so that their round trips overlap.
  await inBatches(consumers, async (c) => {
    const facts = await core.run("admin.diagnose.consumer", async (nc) => {
      const jsm = await diagnoseManager(nc);
      try {
        const { config } = await jsm.consumers.info(c.stream, c.name);
        return { maxDeliver: config.max_deliver ?? -1 };
      } catch (error) {
        if (isPermissionViolation(error)) return undefined;
        if (!isNotFound(error)) throw error;
        return null;
      }
    });
    if (facts !== undefined) found.set(consumerKey(c), facts);
  });
  return found;
};
