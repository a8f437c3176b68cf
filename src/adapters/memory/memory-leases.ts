import { RevisionConflict } from "../../kernel/errors.ts";
import type { Lease, SupervisionLeases } from "../supervision-leases.ts";
import type { MemoryServerState } from "./memory-server.ts";

/** Who supervises a job, until when: the same versioned value as on NATS. */
interface LeaseRecord extends Lease {
  readonly v: 1;
}

/**
 * Supervision leases in the server's leases bucket, one key per job, taken
 * and renewed with compare-and-set on the revision, exactly as
 * src/adapters/nats/job-leases.ts does on NATS KV: held only while renewed,
 * taken over by another holder once `until` has passed. A lease that goes
 * leaves nothing behind (on NATS: purged from the stream, marker and all).
 */
export class MemoryLeases implements SupervisionLeases {
  readonly holder: string;
  readonly #server: MemoryServerState;
  /** Revision and expiry of each lease this holder holds. */
  readonly #held = new Map<string, { revision: number; until: number }>();
  /** Throws `RuntimeStopped` once the broker (or its server) is closed. */
  readonly #assertOpen: (operation: string) => void;

  constructor(server: MemoryServerState, holder: string, assertOpen: (operation: string) => void) {
    this.#server = server;
    this.holder = holder;
    this.#assertOpen = assertOpen;
  }

  /** As on NATS: held only until the `until` last written, so a holder whose renewals stop stops supervising. */
  holds(jobId: string, now = this.#server.clock.now()): boolean {
    const held = this.#held.get(jobId);
    return held !== undefined && held.until > now;
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
        this.#held.set(jobId, { revision, until: now + ttlMs });
        return true;
      }
      const lease = JSON.parse(entry.value) as LeaseRecord;
      if (lease.holder !== this.holder && lease.until > now) return false;
      this.#held.set(jobId, { revision: kv.update(op, jobId, value, entry.revision), until: now + ttlMs });
      return true;
    } catch (error) {
      if (error instanceof RevisionConflict) return false; // another holder won
      throw error;
    }
  }

  async renew(jobId: string, ttlMs: number, now = this.#server.clock.now()): Promise<boolean> {
    const revision = this.#held.get(jobId)?.revision;
    if (revision === undefined) return false;
    const op = "lease.renew";
    this.#assertOpen(op);
    try {
      const next = this.#server.leases.update(op, jobId, this.#value(ttlMs, now), revision);
      this.#held.set(jobId, { revision: next, until: now + ttlMs });
      return true;
    } catch (error) {
      if (error instanceof RevisionConflict) {
        this.#held.delete(jobId);
        return false;
      }
      throw error;
    }
  }

  async release(jobId: string): Promise<void> {
    const revision = this.#held.get(jobId)?.revision;
    this.#held.delete(jobId);
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
    const revision = this.#held.get(jobId)?.revision;
    this.#held.delete(jobId);
    if (revision === undefined) return;
    try {
      this.#assertOpen("lease.giveBack");
      const value = JSON.stringify({ v: 1, holder: this.holder, until: 0 } satisfies LeaseRecord);
      this.#server.leases.update("lease.giveBack", jobId, value, revision);
    } catch {
      // As on NATS: a lease taken over meanwhile, or a closed broker, is not ours to give back.
    }
  }

  async list(): Promise<Array<{ jobId: string; lease: Lease; revision: number }>> {
    this.#assertOpen("lease.list");
    return this.#server.leases.live().map((entry) => ({
      jobId: entry.key,
      lease: JSON.parse(entry.value as string) as LeaseRecord,
      revision: entry.revision,
    }));
  }

  async remove(jobId: string, revision?: number): Promise<void> {
    this.#assertOpen("lease.remove");
    this.#server.leases.erase("lease.remove", jobId, revision);
  }

  async enrol(jobId: string): Promise<boolean> {
    const op = "lease.enrol";
    this.#assertOpen(op);
    try {
      this.#server.leases.create(
        op,
        jobId,
        JSON.stringify({ v: 1, holder: "", until: 0 } satisfies LeaseRecord),
      );
      return true;
    } catch (error) {
      if (error instanceof RevisionConflict) return false; // it has one
      throw error;
    }
  }

  #value(ttlMs: number, now: number): string {
    return JSON.stringify({ v: 1, holder: this.holder, until: now + ttlMs } satisfies LeaseRecord);
  }
}
