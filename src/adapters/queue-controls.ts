/**
 * A queue's controls (`rt.queues`): its settings, one key per queue that
 * every process reads and watches, and its pools of permits, which every
 * worker of the queue in every process takes from before it starts a task.
 *
 * Permits are messages (on NATS, in a work-queue stream): a pool of N has N.
 * - `concurrency`: a worker holds its permit while the handler runs
 *   (`keep()` renews the lease) and gives it back at once when the task
 *   ends (`release()`); a crashed worker's permit comes back when its lease
 *   runs out (the queue's `permitLeaseMs`, `permitLeaseOf` in kernel/queue-settings.ts).
 * - `rate`: a worker gives its permit back at once with a delay of 1000 ms
 *   (`release(1000)`), so no more than N tasks start in any one second.
 * `setPermits` replaces a pool: permits held at that moment are gone (their
 * release is ignored), and the new pool's N are free. Rewrites of one pool
 * at once (two `configure()` calls) end with the pool of the record written
 * last, never both: see `PoolRewrite`.
 */
export type PermitKind = "concurrency" | "rate";

export interface Permit {
  /** Renews the lease on the permit (a long handler). */
  keep(): void;
  /** Gives the permit back, available to others after `delayMs` (default 0). */
  release(delayMs?: number): void;
}

/**
 * One agent target's pool of a queue: the target's hash, the round of the
 * per-target limit (a new round, new pools) and the pool's size, with which
 * the first taker of any process fills it.
 */
export interface TargetPool {
  readonly target: string;
  readonly round: string;
  readonly size: number;
  /** Its permits' lease, as the settings that named the round say (default `defaultPermitLeaseMs`). */
  readonly leaseMs?: number;
}

/**
 * One `configure()`'s rewrite of a pool, after its record was written: the
 * record's revision (it grows with each write of the queue's key), the
 * writer's round (stored in the record for the pool) and a look at whether
 * the stored record still names that round. A rewrite whose record is no
 * longer the pool's latest leaves the pool to the newer one's writer.
 */
interface PoolRewrite {
  readonly revision: number;
  readonly round: string;
  isLatest(): Promise<boolean>;
}

export interface QueueControls {
  /** The stored settings of `queue` and their revision; undefined if never written. */
  getSettings(queue: string): Promise<{ readonly value: string; readonly revision: number } | undefined>;
  /** Writes the settings: creates the key when `revision` is undefined, else compare-and-set (`RevisionConflict`). */
  writeSettings(queue: string, value: string, revision: number | undefined): Promise<number>;
  /**
   * Writes `value` back as the queue's settings when nothing of its key is
   * stored, not even a deletion marker (the server came back with an empty
   * store): a create that loses to any write there, a `configure()`'s or a
   * deletion's. Then each of the queue's pools that holds no permit, free or
   * held, gets the stored record's permits again, as a take that finds its
   * pool lost does. True when this call wrote the record; "refused" when
   * this runtime's user may not write it (a least-privilege worker): a retry
   * cannot mend that.
   */
  restoreSettings(queue: string, value: string): Promise<boolean | "refused">;
  /** Every stored queue's settings. */
  listSettings(): Promise<Array<{ readonly queue: string; readonly value: string }>>;
  /**
   * Calls `onValue` with the current settings of `queue` (undefined: none;
   * revision 0: nothing stored), then with each write, with its revision,
   * until `signal` aborts; kept alive across reconnects, where it starts
   * again with the current settings.
   */
  watchSettings(
    queue: string,
    onValue: (value: string | undefined, revision: number) => void,
    signal: AbortSignal,
  ): Promise<void>;
  /**
   * Replaces the pool of `kind` of `queue` with `count` free permits (0:
   * empty), unless a newer rewrite's record was written: once every rewrite
   * has returned, the pool holds the latest one's permits only. Without
   * `rewrite` (a pool with a single writer: tests) it is replaced as is.
   * A pool made here gets `leaseMs` (default `defaultPermitLeaseMs`); an
   * existing one keeps its lease (`setPermitLease` sets it).
   */
  setPermits(
    queue: string,
    kind: PermitKind,
    count: number,
    rewrite?: PoolRewrite,
    leaseMs?: number,
  ): Promise<void>;
  /**
   * Sets the lease of the queue's pools that exist (on NATS their
   * consumers' ack wait), permits already held included; a pool made later
   * gets its taker's.
   */
  setPermitLease(queue: string, leaseMs: number): Promise<void>;
  /**
   * Waits for a permit of the pool; undefined once `signal` aborts. `leaseMs`
   * is its lease as the taker's settings say (the pool's, when it is made here).
   */
  takePermit(
    queue: string,
    kind: PermitKind,
    signal: AbortSignal,
    leaseMs?: number,
  ): Promise<Permit | undefined>;
  /**
   * Takes up to `max` of the pool's free permits and returns at once with
   * them (maybe none): the HTTP pull API, which answers at once, never waits
   * for a permit.
   */
  takeFreePermits(queue: string, kind: PermitKind, max: number, leaseMs?: number): Promise<Permit[]>;
  /**
   * Waits for a permit of the target's pool, which its first use by any
   * process fills with `pool.size` permits; undefined once `signal` aborts.
   */
  takeTargetPermit(
    queue: string,
    pool: TargetPool,
    kind: PermitKind,
    signal: AbortSignal,
  ): Promise<Permit | undefined>;
  /**
   * Readies the queue's target pools (on NATS their stream, which workers
   * may not make) and drops every pool of `oldRound` (the per-target limit
   * was changed or lifted).
   */
  renewTargetPools(queue: string, oldRound: string | undefined): Promise<void>;
  /**
   * Tells every instance of the HTTP API about a lease of `queue`: its end
   * moved, or it came (api/lease-limits.ts encodes the note). The instance
   * that leased the task holds its concurrency permit; the heartbeat or the
   * answer may come through another. Best effort: never stored (on NATS a
   * core message), heard only by the instances listening now.
   */
  noteLease(queue: string, note: string): void;
  /** Calls `onNote` with each note about `queue`'s leases, until `signal` aborts. */
  watchLeaseNotes(queue: string, onNote: (note: string) => void, signal: AbortSignal): void;
}
