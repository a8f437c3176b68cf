import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { scanBucket } from "./bucket-reads.ts";
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
 * per job. The API decides what is a problem.
 */

/** Every key's value in a bucket (the queues' settings: one key a queue). */
export const readBucketValues = (core: NatsContext, bucket: string): Promise<ReadonlyMap<string, string>> =>
  core.run("admin.diagnose.settings", async (nc) =>
    scanBucket(jetstream(nc), await jetstreamManager(nc), bucket),
  );

/** How many messages each subject of `stream` matching `filter` holds (one absent: none). */
export const readSubjectCounts = (
  core: NatsContext,
  stream: string,
  filter: string,
): Promise<ReadonlyMap<string, number>> =>
  core.run("admin.diagnose.pools", async (nc) => {
    const info = await (await jetstreamManager(nc)).streams.info(stream, { subjects_filter: filter });
    return new Map(Object.entries(info.state.subjects ?? {}));
  });

/** Each consumer's facts by `consumerKey`; null: not on the server. */
export const readConsumers = (
  core: NatsContext,
  consumers: readonly ConsumerRef[],
): Promise<ReadonlyMap<string, ConsumerFacts | null>> =>
  core.run("admin.diagnose.consumers", async (nc) => {
    const jsm = await jetstreamManager(nc);
    const found = new Map<string, ConsumerFacts | null>();
    for (const c of consumers) {
      try {
        const { config } = await jsm.consumers.info(c.stream, c.name);
        found.set(consumerKey(c), { maxDeliver: config.max_deliver ?? -1 });
      } catch (error) {
        if (!isNotFound(error)) throw error;
        found.set(consumerKey(c), null);
      }
    }
    return found;
  });
