import type { ServerTime } from "../../kernel/clock.ts";
import { RevisionConflict } from "../../kernel/errors.ts";
import {
  HeldLeases,
  heartbeatKey,
  isRunOutHeartbeat,
  jobLeases,
  type LeaseValue,
  leaseRunsUntil,
  leaseUntilFor,
  leaseValue,
} from "../held-leases.ts";
import type { Lease, ListedLease, SupervisionLeases } from "../supervision-leases.ts";
import type { MemoryServerState } from "./memory-server.ts";

/**
 * Supervision leases in the server's leases bucket, one key per job, taken
 * and renewed with compare-and-set on the revision, with the holder's
 * heartbeat renewing all it holds, exactly as src/adapters/nats/job-leases.ts
 * does on NATS KV: held only while renewed, taken over by another holder once
 * both the lease's `until` and its holder's heartbeat have passed. A lease
 * that goes leaves nothing behind (on NATS: purged from the stream, marker
 * and all).
 */
export class MemoryLeases implements SupervisionLeases {
  readonly holder: string;
  readonly #server: MemoryServerState;
  /** Each lease this holder wrote last, and its heartbeat. */
  readonly #held = new HeldLeases();
  /** Throws `RuntimeStopped` once the broker (or its server) is closed. */
  readonly #assertOpen: (operation: string) => void;

  constructor(server: MemoryServerState, holder: string, assertOpen: (operation: string) => void) {
    this.#server = server;
    this.holder = holder;
    this.#assertOpen = assertOpen;
  }

  /** As on NATS: held only until the `until` last written, so a holder whose renewals stop stops supervising. */
  holds(jobId: string, now = this.#server.clock.now()): boolean {
    return this.#held.holds(jobId, now);
  }

  supervises(jobId: string): boolean {
    return this.#held.has(jobId);
  }

  coveredByHeartbeat(jobId: string, now = this.#server.clock.now()): boolean {
    return this.#held.coveredByHeartbeat(jobId, now);
  }

  /** As on NATS: compare-and-set on the heartbeat's key; a key not ours any more starts a streak covering nothing. */
  async heartbeat(ttlMs: number, now = this.#server.clock.now()): Promise<void> {
    if (this.#held.size === 0) return;
    const op = "lease.heartbeat";
    this.#assertOpen(op);
    const kv = this.#server.leases;
    const key = heartbeatKey(this.holder);
    const value = this.#value(ttlMs, now);
    const known = this.#held.heartbeatRevision;
    const current = kv.get(op, key);
    const unbroken = (current?.value === undefined ? undefined : current.revision) === known;
    const revision =
      current?.value === undefined ? kv.create(op, key, value) : kv.update(op, key, value, current.revision);
    this.#held.beat(now + ttlMs, revision, now, unbroken); // answered as it was asked: nothing awaited
  }

  async acquire(jobId: string, ttlMs: number, now = this.#server.clock.now()): Promise<boolean> {
    const op = "lease.acquire";
    this.#assertOpen(op);
    const kv = this.#server.leases;
    const value = this.#value(ttlMs, now);
    const entry = kv.get(op, jobId);
    try {
      if (entry?.value === undefined) {
        const revision = entry ? kv.update(op, jobId, value, entry.revision) : kv.create(op, jobId, value);
        this.#held.wrote(jobId, revision, now + ttlMs);
        return true;
      }
      const aheadMs = this.#aheadMs(now);
      const stored = JSON.parse(entry.value) as LeaseValue;
      const lease = { holder: stored.holder, until: leaseUntilFor(stored, entry.storedAt, aheadMs) };
      if (
        lease.holder !== this.holder &&
        leaseRunsUntil(lease, this.#heartbeatOf(lease.holder, aheadMs)) > now
      )
        return this.#takenByAnother(jobId);
      this.#held.wrote(jobId, kv.update(op, jobId, value, entry.revision), now + ttlMs);
      return true;
    } catch (error) {
      // Another write came first (another holder's, or this one's own renewal): the next try reads it.
      if (error instanceof RevisionConflict) return false;
      throw error;
    }
  }

  /** As on NATS: found another's, the lease is no longer this holder's to supervise by (`supervises`). */
  #takenByAnother(jobId: string): false {
    this.#held.forget(jobId);
    return false;
  }

  #heartbeatOf(holder: string, aheadMs: number): number | undefined {
    const entry = this.#server.leases.get("lease.acquire", heartbeatKey(holder));
    return entry?.value === undefined
      ? undefined
      : leaseUntilFor(JSON.parse(entry.value) as LeaseValue, entry.storedAt, aheadMs);
  }

  /**
   * How far the clock `now` was read from runs ahead of the server's: what
   * the server's clock says now, read at once (nothing is awaited in between).
   */
  #aheadMs(now: number): number {
    return now - this.#server.clock.now();
  }

  async renew(jobId: string, ttlMs: number, now = this.#server.clock.now()): Promise<boolean> {
    const revision = this.#held.revisionOf(jobId);
    if (revision === undefined) return false;
    const op = "lease.renew";
    this.#assertOpen(op);
    try {
      const next = this.#server.leases.update(op, jobId, this.#value(ttlMs, now), revision);
      this.#held.wrote(jobId, next, now + ttlMs);
      return true;
    } catch (error) {
      if (error instanceof RevisionConflict) {
        this.#held.forget(jobId);
        return false;
      }
      throw error;
    }
  }

  async release(jobId: string): Promise<void> {
    const revision = this.#held.revisionOf(jobId);
    this.#held.forget(jobId);
    if (revision === undefined) return;
    try {
      this.#assertOpen("lease.release");
      // Only our write of it: a later one (another holder's) stays.
      this.#server.leases.erase("lease.release", jobId, revision);
    } catch {
      // As on NATS: a closed broker leaves the lease to run out.
    }
  }

  async giveBack(jobId: string): Promise<void> {
    const revision = this.#held.revisionOf(jobId);
    this.#held.forget(jobId);
    if (revision === undefined) return;
    try {
      this.#assertOpen("lease.giveBack");
      const value = leaseValue(this.holder, 0, this.#server.clock.now());
      this.#server.leases.update("lease.giveBack", jobId, value, revision);
    } catch {
      // As on NATS: a lease taken over meanwhile, or a closed broker, is not ours to give back.
    }
  }

  async list(now = this.#server.clock.now()): Promise<Array<ListedLease>> {
    this.#assertOpen("lease.list");
    return jobLeases(this.#server.leases.live(), this.#aheadMs(now));
  }

  /** The server's clock itself, read now. */
  serverTime(): ServerTime {
    return { at: this.#server.clock.now(), seenAt: performance.now() };
  }

  async readServerTime(): Promise<ServerTime> {
    return this.serverTime();
  }

  async get(jobId: string, now = this.#server.clock.now()): Promise<ListedLease | undefined> {
    const op = "lease.get";
    this.#assertOpen(op);
    const entry = this.#server.leases.get(op, jobId);
    if (entry?.value === undefined) return undefined;
    const beat = this.#server.leases.get(op, heartbeatKey((JSON.parse(entry.value) as Lease).holder));
    return jobLeases(beat ? [entry, beat] : [entry], this.#aheadMs(now))[0];
  }

  /** As on NATS: the heartbeats that ran out (runtimes gone) go. */
  purgeRunOutHeartbeats(now = this.#server.clock.now()): void {
    const aheadMs = this.#aheadMs(now);
    for (const entry of this.#server.leases.live())
      if (isRunOutHeartbeat(entry, now, aheadMs))
        this.#server.leases.erase("lease.purgeMarkers", entry.key, entry.revision);
  }

  async remove(jobId: string, revision?: number): Promise<void> {
    this.#assertOpen("lease.remove");
    this.#server.leases.erase("lease.remove", jobId, revision);
  }

  async enrol(jobId: string): Promise<boolean> {
    const op = "lease.enrol";
    this.#assertOpen(op);
    try {
      this.#server.leases.create(op, jobId, leaseValue("", 0, this.#server.clock.now()));
      return true;
    } catch (error) {
      if (error instanceof RevisionConflict) return false; // it has one
      throw error;
    }
  }

  #value(ttlMs: number, now: number): string {
    return leaseValue(this.holder, now + ttlMs, now);
  }
}
