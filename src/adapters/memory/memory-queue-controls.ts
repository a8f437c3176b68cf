import type { Clock } from "../../kernel/clock.ts";
import { whenAborted } from "../../kernel/signals.ts";
import type { Permit, PermitKind, QueueControls, TargetPool } from "../queue-controls.ts";
import type { MemoryKv } from "./memory-kv.ts";

/**
 * One pool of permits in memory, with the NATS pool's rules: a permit is
 * taken by the first waiter, given back now or after a delay, and a pool
 * replaced by `reset` forgets the permits held from the old one (their
 * release is ignored, as a nak of a purged message is). No lease: memory
 * runtimes share one process and do not crash apart.
 */
export class MemoryPermitPool {
  #free = 0;
  #generation = 0;
  /** The record revision of the last `reset` that gave one (0: none yet). */
  #revision = 0;
  readonly #waiting: Array<(generation: number) => void> = [];
  readonly #clock: Clock;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /**
   * Replaces the pool with `count` free permits; a reset for a record older
   * than the one last applied (`revision`, two `configure()` calls whose
   * rewrites came in the other order) is ignored: a reset is one step here,
   * so the order of the records is the only race left.
   */
  reset(count: number, revision?: number): void {
    if (revision !== undefined) {
      if (revision < this.#revision) return;
      this.#revision = revision;
    }
    this.#generation++;
    this.#free = count;
    while (this.#free > 0 && this.#waiting.length > 0) {
      this.#free--;
      this.#waiting.shift()?.(this.#generation);
    }
  }

  /** Up to `max` free permits, at once. */
  takeFree(max: number): Permit[] {
    const count = Math.min(max, this.#free);
    this.#free -= count;
    return Array.from({ length: count }, () => this.#permit(this.#generation));
  }

  take(signal: AbortSignal): Promise<Permit | undefined> {
    if (signal.aborted) return Promise.resolve(undefined);
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve(this.#permit(this.#generation));
    }
    return new Promise((resolve) => {
      const onAbort = () => {
        const at = this.#waiting.indexOf(grant);
        if (at >= 0) this.#waiting.splice(at, 1);
        resolve(undefined);
      };
      const grant = (generation: number) => {
        signal.removeEventListener("abort", onAbort);
        resolve(this.#permit(generation));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiting.push(grant);
    });
  }

  #permit(generation: number): Permit {
    let released = false;
    return {
      keep: () => undefined,
      release: (delayMs = 0) => {
        if (released) return;
        released = true;
        if (delayMs <= 0) return this.#giveBack(generation);
        // Not before its time by the clock: a Node timer may fire a few ms early (its loop time is
        // stale when set in a busy turn), and a rate permit back early is an extra start in a second.
        // 1 ms more for the clock's whole milliseconds.
        const due = this.#clock.now() + delayMs + 1;
        const check = () => {
          const left = due - this.#clock.now();
          if (left > 0) this.#clock.setTimeout(check, left);
          else this.#giveBack(generation);
        };
        this.#clock.setTimeout(check, delayMs + 1);
      },
    };
  }

  #giveBack(generation: number): void {
    if (generation !== this.#generation) return;
    const next = this.#waiting.shift();
    if (next) next(generation);
    else this.#free++;
  }
}

/** Queue controls on the memory server: its `queues` bucket and its pools, shared by every runtime on it. */
export const memoryQueueControls = (
  kv: MemoryKv,
  pools: (queue: string, kind: PermitKind) => MemoryPermitPool,
  open: (operation: string) => void,
  targetPools: MemoryTargetPools,
  leaseNotes: {
    readonly publish: QueueControls["noteLease"];
    readonly watch: QueueControls["watchLeaseNotes"];
  },
): QueueControls => ({
  noteLease: (queue, note) => leaseNotes.publish(queue, note),
  watchLeaseNotes: (queue, onNote, signal) => leaseNotes.watch(queue, onNote, signal),
  getSettings: async (queue) => {
    open("queue.settings.get");
    const entry = kv.get("queue.settings.get", queue);
    return entry?.value === undefined ? undefined : { value: entry.value, revision: entry.revision };
  },
  writeSettings: async (queue, value, revision) => {
    open("queue.settings.write");
    return revision === undefined
      ? kv.create("queue.settings.write", queue, value)
      : kv.update("queue.settings.write", queue, value, revision);
  },
  // A memory server never loses its store: a pool is never lost with the record, none to seed.
  restoreSettings: async (queue, value) => {
    open("queue.settings.restore");
    if (kv.get("queue.settings.restore", queue)) return false;
    kv.create("queue.settings.restore", queue, value);
    return true;
  },
  listSettings: async () => {
    open("queue.settings.list");
    return kv.live().flatMap((e) => (e.value === undefined ? [] : [{ queue: e.key, value: e.value }]));
  },
  watchSettings: async (queue, onValue, signal) => {
    open("queue.settings.watch");
    if (signal.aborted) return;
    const current = kv.get("queue.settings.watch", queue);
    if (current) onValue(current.value, current.revision);
    else onValue(undefined, 0);
    const unwatch = kv.watch((entry) => {
      if (entry.key === queue) onValue(entry.value, entry.revision);
    });
    await whenAborted(signal);
    unwatch();
  },
  // One process: no holder is ever silent while it lives, so no lease to set.
  setPermitLease: async () => undefined,
  setPermits: async (queue, kind, count, rewrite) => {
    open("queue.permits.set");
    pools(queue, kind).reset(count, rewrite?.revision);
  },
  takePermit: async (queue, kind, signal) => {
    open("queue.permit.take");
    return pools(queue, kind).take(signal);
  },
  takeTargetPermit: async (queue, pool, kind, signal) => {
    open("queue.permit.take");
    return targetPools.pool(queue, pool, kind).take(signal);
  },
  renewTargetPools: async (queue, oldRound) => {
    open("queue.permits.set");
    if (oldRound !== undefined) targetPools.drop(queue, oldRound);
  },
  takeFreePermits: async (queue, kind, max) => {
    open("queue.permit.take");
    return pools(queue, kind).takeFree(max);
  },
});

/** The target pools of a memory server, made full on first use, as on NATS. */
export class MemoryTargetPools {
  readonly #pools = new Map<string, MemoryPermitPool>();
  readonly #clock: Clock;
  constructor(clock: Clock) {
    this.#clock = clock;
  }

  pool(queue: string, pool: TargetPool, kind: PermitKind): MemoryPermitPool {
    const key = `${queue}/${pool.round}/${pool.target}/${kind}`;
    let found = this.#pools.get(key);
    if (!found) {
      found = new MemoryPermitPool(this.#clock);
      found.reset(pool.size);
      this.#pools.set(key, found);
    }
    return found;
  }

  drop(queue: string, round: string): void {
    for (const [key, pool] of this.#pools) {
      if (!key.startsWith(`${queue}/${round}/`)) continue;
      // Permits held from it are forgotten (their release ignored); waiters wait for the next round.
      pool.reset(0);
      this.#pools.delete(key);
    }
  }
}
