/**
 * Announcements of the live parts of every runtime (workers), one key each,
 * that any process can list. A key is rewritten while its owner lives; what
 * is stored is text the API layer writes and reads (`kernel/presence.ts`),
 * and whether it still stands is decided by the reader from its own time to
 * live and the time the store wrote it (by the store's clock, not the
 * announcing host's), so the store needs no per-key expiry (nats-server 2.9
 * has none).
 * Stale keys are removed by the store's own age limit.
 */
export interface Presence {
  /** Writes (or rewrites) `key`. */
  announce(key: string, value: string): Promise<void>;
  /** Removes `key`: a clean stop; a crash leaves it to run out. */
  withdraw(key: string): Promise<void>;
  /** Every stored announcement, run out or not: its text and when the store wrote it (epoch ms, the store's clock). */
  list(): Promise<Array<{ readonly value: string; readonly storedAt: number }>>;
}
