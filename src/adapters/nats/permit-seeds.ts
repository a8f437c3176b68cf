import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { Logger } from "../../kernel/logger.ts";
import { decodeQueueSettings } from "../../kernel/queue-settings.ts";
import type { PermitKind } from "../queue-controls.ts";
import { publishPermits } from "./permit-publishes.ts";
import { nextOnSubject } from "./subject-messages.ts";

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
 * of), its subject holding fewer than the record's N, all of one publishing,
 * and the missing ones published (`topped`, warned of), its subject holding
 * some, free or held (`kept`), or none, and none to publish (`none`: the
 * queue's record gone, or no limit for the pool).
 */
export type SeedOutcome = "seeded" | "topped" | "kept" | "none";

/** The pool's size as the stored record says (0: no limit for it, or no record), and its round. */
const recordedPool = async (pool: LostPool) => {
  const value = await pool.record();
  if (value === undefined) return { count: 0, round: "" };
  const { settings, pools } = decodeQueueSettings(pool.queue, value);
  const count = (pool.kind === "concurrency" ? settings.maxConcurrency : settings.ratePerSecond) ?? 0;
  // A record written before pools had rounds: one id for every seeder all the same.
  return { count, round: pools?.[pool.kind] ?? "unrounded" };
};

/** The header a publish's id is stored under. */
const msgIdHeader = "Nats-Msg-Id";

/**
 * A pool holding `on` permits, free or held, fewer than the record's N, and
 * every one of them of one publishing of the record's round (their ids
 * `<queue>.<kind>.<round>.<attempt>.<i>`, one attempt): a seed or rewrite
 * that stored some and not the rest, its runtime then stopped or cut off.
 * Every later count found permits and said "kept", and the pool stayed short
 * until the next `configure()`. The missing indices are published under
 * their ids: a publisher of the same ids still at work (a rewrite slow to
 * finish) or another top-up at once stores each once (the duplicate window).
 * Permits of anything else (another round beside the pool, ids not of a
 * publishing) are left as they are: `kept`.
 */
const topUp = async (pool: LostPool, on: number, log: Logger): Promise<SeedOutcome> => {
  const { js, jsm, stream, subject, queue, kind } = pool;
  const { count, round } = await recordedPool(pool);
  if (on >= count) return "kept";
  const ids: string[] = [];
  try {
    for (let from = 1; ids.length <= on; ) {
      const stored = await nextOnSubject(jsm, stream, subject, from);
      if (!stored) break;
      ids.push(stored.header?.get(msgIdHeader) ?? "");
      from = stored.seq + 1;
    }
  } catch (error) {
    // A worker under least privilege may not read the shared permits stream (every queue's
    // pools): the pool is left short, as before; a failed look-up would fail its take.
    log.debug({ queue, kind, stream, err: error }, `queue ${queue}: its short ${kind} pool not read`);
    return "kept";
  }
  const first = ids[0] ?? "";
  const publishing = first.slice(0, first.lastIndexOf(".") + 1);
  const ofRound = `${queue}.${kind}.${round}.`;
  const attempt = publishing.slice(ofRound.length, -1);
  if (
    !publishing.startsWith(ofRound) ||
    !/^\d+$/.test(attempt) ||
    ids.some((id) => !id.startsWith(publishing))
  )
    return "kept";
  const have = new Set(ids.map((id) => id.slice(publishing.length)));
  let stored = 0;
  for (let i = 0; i < count; i++) {
    if (have.has(`${i}`)) continue;
    const ack = await js.publish(subject, `${i}`, { msgID: `${publishing}${i}` });
    if (!ack.duplicate) stored++;
  }
  log.warn(
    { queue, kind, stream, subject, round, permits: count, found: on, stored },
    `queue ${queue}: its ${kind} pool held ${on} of the record's ${count} permits of round ${round}, all of one publishing (one that stored some, its runtime then stopped): the missing ones published again (${stored} stored here)`,
  );
  return "topped";
};

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
 * still holds them: nothing is published; one holding fewer than N is
 * topped up when they are all of one publishing (`topUp`). Called by the look-up that made
 * the pool's consumer, and by a take whose pool has given no permit for a
 * while (`pool-consumers.ts`): a seed that did not get through is tried again.
 */
export const seedLostPermits = async (pool: LostPool, log: Logger): Promise<SeedOutcome> => {
  const { js, jsm, stream, subject, queue, kind } = pool;
  const on = await permitsOn(jsm, stream, subject);
  if (on > 0) return topUp(pool, on, log);
  const { count, round } = await recordedPool(pool);
  if (!count) return "none";
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
