import { randomUUID } from "node:crypto";
import { Effect } from "effect";
import type { PermitKind, QueueControls } from "../adapters/queue-controls.ts";
import { retryWith } from "../effects/retry.ts";
import { RevisionConflict } from "../kernel/errors.ts";
import {
  checkQueueLimits,
  checkQueueName,
  decodeQueueSettings,
  encodeQueueSettings,
  openQueue,
  type PoolRounds,
  permitLeaseOf,
  type QueueLimits,
  type QueueSettings,
  withLimits,
} from "../kernel/queue-settings.ts";
import type { Role } from "./permissions.ts";
import { requireRole } from "./permissions.ts";

export type {
  PerTargetLimits,
  PerTargetSettings,
  QueueLimits,
  QueueSettings,
} from "../kernel/queue-settings.ts";

/**
 * Queue controls from any process (`rt.queues`): pause and resume a queue,
 * cap its handlers across every worker, limit how many tasks start per
 * second. Writes need the `admin` role; reading needs none.
 */
export interface Queues {
  /**
   * Sets the queue's limits across all workers of all processes: a number
   * sets one, `null` lifts it, a key left out keeps it. Permits held when
   * a limit changes are dropped: for at most the length of the tasks
   * running then, the old and new limits add up.
   * `perTarget` limits each agent target on its own, across every worker
   * bound to an agent (`agent` option) whose current target it is, read when
   * each task starts; a change makes new pools (the old ones are dropped).
   * `permitLeaseMs` lengthens the permits' lease, for handlers that hold the
   * event loop (a synchronous model run) longer than about 3 s: with the
   * default 5 s such a handler loses its permit and one task more than
   * `maxConcurrency` runs; a crashed worker's permit then comes back after
   * the longer lease.
   * Should the server come back with an empty store, the record is written
   * back by a runtime that saw it: a worker of the queue, the HTTP pull API
   * that read it, or this runtime, which watches the queue's record from
   * this call on (one consumer per queue) while it lives.
   * @example
   * await rt.queues.configure("emails", { ratePerSecond: 100, maxConcurrency: 5 });
   * await rt.queues.configure("llm", { perTarget: { maxConcurrency: 2 } });
   * await rt.queues.configure("onnx", { maxConcurrency: 4, permitLeaseMs: 60_000 });
   */
  configure(queue: string, limits: QueueLimits): Promise<QueueSettings>;
  /**
   * Stops every worker of the queue, in every process, from starting its
   * tasks within a second; running handlers finish, pulled tasks go back.
   * @example
   * await rt.queues.pause("emails");
   */
  pause(queue: string): Promise<QueueSettings>;
  /** Lets the queue's workers start tasks again. @example await rt.queues.resume("emails"); */
  resume(queue: string): Promise<QueueSettings>;
  /** The queue's settings (an unconfigured queue: running, no limits). @example (await rt.queues.get("emails")).paused */
  get(queue: string): Promise<QueueSettings>;
  /** Every queue configured or paused at some time. @example for (const q of await rt.queues.list()) log.info(q, "queue"); */
  list(): Promise<QueueSettings[]>;
}

/** A compare-and-set lost to another writer: read again and write again, a few times. */
const casRetry = retryWith(
  { attempts: 8, initialDelayMs: 10, maxDelayMs: 200 },
  (e: unknown) => e instanceof RevisionConflict,
);

/** The limit each pool counts. */
export const limitOf = { concurrency: "maxConcurrency", rate: "ratePerSecond" } as const satisfies Record<
  PermitKind,
  keyof QueueLimits
>;
export const poolKinds = Object.keys(limitOf) as PermitKind[];

/**
 * `keep` is told each record this face wrote (its value and revision): the
 * runtime keeps it, and writes it back when it vanishes (`queueKeepers`).
 */
export const queuesFace = (
  controls: QueueControls,
  roles: ReadonlySet<Role>,
  now: () => number,
  keep: (queue: string, value: string, revision: number) => void = () => undefined,
): Queues => {
  const read = async (queue: string) => {
    const found = await controls.getSettings(queue);
    if (!found) return { settings: openQueue(queue), pools: undefined, revision: undefined };
    const { settings, pools } = decodeQueueSettings(queue, found.value);
    return { settings, pools, revision: found.revision };
  };

  /**
   * Reads, changes and writes the queue's settings by compare-and-set (the
   * pools' rounds as `next` leaves them); returns what was written, what was
   * there and the revision written.
   */
  const change = (
    queue: string,
    next: (
      current: QueueSettings,
      pools: PoolRounds | undefined,
    ) => { settings: QueueSettings; pools: PoolRounds | undefined },
  ) =>
    Effect.runPromise(
      Effect.tryPromise({
        try: async () => {
          const { settings, pools, revision } = await read(queue);
          const written = next(settings, pools);
          const value = encodeQueueSettings(written.settings, written.pools);
          const stored = await controls.writeSettings(queue, value, revision);
          keep(queue, value, stored);
          return { before: settings, written: written.settings, revision: stored };
        },
        catch: (error) => error,
      }).pipe(casRetry),
    );

  /**
   * The pools' lease is the one of the record written last, whichever call
   * wrote it: set from a fresh read, and again while the record changed
   * meanwhile. Set from each call's own record, a call overtaken by
   * another's left its older lease on the pools, longer or shorter than the
   * one every taker reads (found by a review: two holders at a limit of 1).
   */
  const leaseAsRecorded = async (queue: string) => {
    let lease = permitLeaseOf((await read(queue)).settings);
    for (let tries = 0; tries < 8; tries++) {
      await controls.setPermitLease(queue, lease);
      const now = permitLeaseOf((await read(queue)).settings);
      if (now === lease) return;
      lease = now;
    }
  };

  const setPaused = async (queue: unknown, paused: boolean, call: string) => {
    requireRole(roles, "admin", call);
    const name = checkQueueName(queue);
    return (
      await change(name, (current, pools) => ({ settings: { ...current, paused, updatedAt: now() }, pools }))
    ).written;
  };

  return {
    configure: async (queue, limits) => {
      requireRole(roles, "admin", "rt.queues.configure()");
      const name = checkQueueName(queue);
      const checked = checkQueueLimits(limits);
      const round = randomUUID().slice(0, 8);
      // A pool is rewritten when its limit changed or was given (given again, it repairs a pool
      // that a crash between the record and the pool left): the record names this call's round
      // for it, and of rewrites at once the one whose record was written last keeps the pool.
      // A pool with a limit is rewritten too when the permits' lease changed or was given (permits
      // held then are dropped, as for a new limit).
      const leaseGiven = (before: QueueSettings, after: QueueSettings) =>
        before.permitLeaseMs !== after.permitLeaseMs || checked.permitLeaseMs !== undefined;
      const rewritten = (before: QueueSettings, after: QueueSettings) =>
        poolKinds.filter(
          (kind) =>
            before[limitOf[kind]] !== after[limitOf[kind]] ||
            checked[limitOf[kind]] !== undefined ||
            (after[limitOf[kind]] !== undefined && leaseGiven(before, after)),
        );
      const { before, written, revision } = await change(name, (current, pools) => {
        const settings = withLimits(current, checked, now(), round);
        const ours = rewritten(current, settings);
        return {
          settings,
          pools:
            ours.length === 0
              ? pools
              : { ...pools, ...Object.fromEntries(ours.map((kind) => [kind, round])) },
        };
      });
      // The per-target pools of a changed limit: new ones, filled on first use; the old ones dropped.
      const old = before.perTarget?.round;
      if (old !== written.perTarget?.round) await controls.renewTargetPools(name, old);
      // The pools after the record: a worker that sees the new limit finds its permits, or waits
      // for them. A crash in between leaves the pool of the old limit: configure again repairs it.
      const pools = rewritten(before, written);
      for (const kind of pools) {
        await controls.setPermits(
          name,
          kind,
          written[limitOf[kind]] ?? 0,
          { revision, round, isLatest: async () => (await read(name)).pools?.[kind] === round },
          permitLeaseOf(written),
        );
      }
      if (pools.length > 0 || leaseGiven(before, written)) await leaseAsRecorded(name);
      return written;
    },
    pause: (queue) => setPaused(queue, true, "rt.queues.pause()"),
    resume: (queue) => setPaused(queue, false, "rt.queues.resume()"),
    get: async (queue) => (await read(checkQueueName(queue))).settings,
    list: async () =>
      (await controls.listSettings())
        .map(({ queue, value }) => decodeQueueSettings(queue, value).settings)
        .sort((a, b) => a.queue.localeCompare(b.queue)),
  };
};
