import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { Logger } from "../../kernel/logger.ts";
import { decodeQueueSettings } from "../../kernel/queue-settings.ts";
import type { PermitKind } from "../queue-controls.ts";
import { publishPermits } from "./permit-publishes.ts";

/** Where a pool's permits live, and how its queue's record is read now. */
interface LostPool {
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly stream: string;
  readonly subject: string;
  readonly queue: string;
  readonly kind: PermitKind;
  /** The queue's stored record, undefined when none. */
  readonly record: () => Promise<string | undefined>;
}

/**
 * What a seed found: the pool's permits published again (`seeded`, and warned
 * of), its subject holding some, free or held (`kept`), or none, and none to
 * publish (`none`: the queue's record gone, or no limit for the pool).
 */
export type SeedOutcome = "seeded" | "kept" | "none";

/** The permits a pool's subject holds, free or held (a work-queue stream keeps a permit until it is acked: never). */
const permitsOn = async (jsm: JetStreamManager, stream: string, subject: string): Promise<number> => {
  const info = await jsm.streams.info(stream, { subjects_filter: subject });
  return info.state.subjects?.[subject] ?? 0;
};

/**
 * A pool whose consumer was found missing and whose subject holds no permit
 * at all (its stream deleted by hand, or the server back with an empty
 * store: nothing else makes them again while the limit stays): publishes
 * again the N of the queue's record, under the ids of its round's first
 * rewrite (`<queue>.<kind>.<round>.1.<i>`). Runtimes seeding at once, or a
 * seed beside the `configure()` that wrote the round, are one pool: the
 * server keeps one message per id within its duplicate window (2 min),
 * which a stream made again starts empty. A pool whose permits are all held
 * still holds them: nothing is published. Called by the look-up that made
 * the pool's consumer, and by a take whose pool has given no permit for a
 * while (`pool-consumers.ts`): a seed that did not get through is tried again.
 */
export const seedLostPermits = async (pool: LostPool, log: Logger): Promise<SeedOutcome> => {
  const { js, jsm, stream, subject, queue, kind } = pool;
  if ((await permitsOn(jsm, stream, subject)) > 0) return "kept";
  const value = await pool.record();
  if (value === undefined) return "none";
  const { settings, pools } = decodeQueueSettings(queue, value);
  const count = kind === "concurrency" ? settings.maxConcurrency : settings.ratePerSecond;
  if (!count) return "none";
  // A record written before pools had rounds: one id for every seeder all the same.
  const round = pools?.[kind] ?? "unrounded";
  let stored = 0;
  await publishPermits(js, subject, count, `${queue}.${kind}.${round}.1`, (_, duplicate) => {
    if (!duplicate) stored++;
  });
  const gone = `queue ${queue}: its ${kind} permits were gone from ${stream} (the stream deleted, or the server back with an empty store), none held or free`;
  const fields = { queue, kind, stream, subject, round, permits: count, stored };
  if (stored > 0) {
    const others = stored < count ? `, the other ${count - stored} already by another runtime` : "";
    log.warn(
      fields,
      `${gone}: the record's ${count} permits of round ${round} published again (${stored} stored here${others})`,
    );
    return "seeded";
  }
  // Every id a duplicate: another runtime's seed stored them, or they were purged since (the
  // server remembers an id past a purge): the subject's count tells which.
  const now = await permitsOn(jsm, stream, subject).catch(() => undefined);
  const dropped = `the record's ${count} permits of round ${round} published again, none stored here (each id one the server had within its duplicate window, 2 min)`;
  if (now === undefined) log.warn(fields, `${gone}: ${dropped}`);
  else if (now > 0)
    log.warn(
      { ...fields, now },
      `${gone}: ${dropped}: another runtime's seed stored them (${now} on the subject now)`,
    );
  else
    log.warn(
      { ...fields, now },
      `${gone}: ${dropped}, and the subject holds none (the same round's permits purged since): the pool stays empty until a take's seed past that window, or a configure()`,
    );
  return "seeded";
};
