import { createHash } from "node:crypto";
import type { Lease, ListedLease } from "./supervision-leases.ts";

/**
 * The key of a runtime's heartbeat in the leases bucket. It has a dot, and a
 * job id is one subject token without one: a heartbeat is never read as a
 * job's lease. Hashed: a holder is the runtime's name (any label) and a few
 * random characters, and a KV key allows fewer characters than a label.
 */
export const heartbeatKey = (holder: string): string =>
  `heartbeat.${createHash("sha256").update(holder).digest("hex").slice(0, 24)}`;

const isHeartbeatKey = (key: string): boolean => key.startsWith("heartbeat.");

/**
 * Until when another runtime must leave a job to the lease's holder: the
 * later of the lease's own `until` and the holder's heartbeat. A lease given
 * back (`until` 0) is run out whatever the heartbeat says.
 */
export const leaseRunsUntil = (lease: Lease, heartbeatUntil: number | undefined): number =>
  lease.until === 0 ? 0 : Math.max(lease.until, heartbeatUntil ?? 0);

/**
 * A lease or a heartbeat as stored: its holder, until when, and when its
 * writer wrote it (`at`), both by the writer's clock. `at` is absent from
 * what versions before it wrote.
 */
export interface LeaseValue extends Lease {
  readonly v: 1;
  readonly at?: number;
}

/** The stored value of a lease or heartbeat `holder` writes at `at` (its clock), good until `until`. */
export const leaseValue = (holder: string, until: number, at: number): string =>
  JSON.stringify({ v: 1, holder, until, at } satisfies LeaseValue);

/** An entry of the leases bucket as a broker stores it (`value` undefined: a delete or purge marker). */
export interface StoredLease {
  readonly key: string;
  readonly value: string | undefined;
  readonly revision: number;
  /** When the server stored it, by the server's clock. */
  readonly storedAt?: number | undefined;
}

/**
 * Until when a stored lease or heartbeat holds, on the clock of the runtime
 * that reads it: the span its writer gave it (`until - at`), counted from
 * the server's stamp of the write and moved by `aheadMs`, how far the
 * reader's clock runs ahead of the server's. Read as written (the writer's
 * clock taken for the reader's) when one of the three is missing: a value of
 * an older version, an entry without a stamp, a reader with no reading of
 * the server's clock. A lease given back (`until` 0) stays run out.
 */
export const leaseUntilFor = (
  value: LeaseValue,
  storedAt: number | undefined,
  aheadMs: number | undefined,
): number =>
  value.until === 0 || value.at === undefined || storedAt === undefined || aheadMs === undefined
    ? value.until
    : storedAt + aheadMs + (value.until - value.at);

/**
 * The jobs' leases among the bucket's entries (markers and heartbeats left
 * out), each `until` as the runtime reading them must take it: with its
 * holder's heartbeat, from the same entries (`leaseRunsUntil`), on its own
 * clock (`leaseUntilFor`, `aheadMs`). Both brokers' `list()`.
 */
export const jobLeases = (entries: Iterable<StoredLease>, aheadMs?: number): Array<ListedLease> => {
  const heartbeats = new Map<string, number>();
  const leases: Array<ListedLease> = [];
  for (const { key, value, revision, storedAt } of entries) {
    if (value === undefined) continue;
    const stored = JSON.parse(value) as LeaseValue;
    const lease = { holder: stored.holder, until: leaseUntilFor(stored, storedAt, aheadMs) };
    if (isHeartbeatKey(key)) heartbeats.set(lease.holder, lease.until);
    else leases.push({ jobId: key, lease, revision });
  }
  return leases.map((listed) => ({
    ...listed,
    lease: { ...listed.lease, until: leaseRunsUntil(listed.lease, heartbeats.get(listed.lease.holder)) },
  }));
};

/** A runtime's heartbeat that ran out by `now` on the reader's clock (the runtime is gone): cleanup removes it. */
export const isRunOutHeartbeat = (
  { key, value, storedAt }: StoredLease,
  now: number,
  aheadMs?: number,
): boolean =>
  value !== undefined &&
  isHeartbeatKey(key) &&
  leaseUntilFor(JSON.parse(value) as LeaseValue, storedAt, aheadMs) <= now;

interface Held {
  readonly revision: number;
  /**
   * The server that stored that write (its id), when the stream has no other
   * copy: the lease is then removed by its sequence (`storedOn`).
   */
  readonly on: string | undefined;
  /** The `until` this runtime wrote in the job's own lease. */
  readonly until: number;
  /** The heartbeat streak that covers it (-1: none; its own `until` does until a renewal). */
  streak: number;
}

/**
 * The leases one runtime holds, and its heartbeat: what lets a runtime renew
 * every job it supervises with one write. A job's lease names its holder; the
 * holder writes its heartbeat every third of the lease, and another runtime
 * takes a job over only once both the lease's own `until` and the holder's
 * heartbeat have run out.
 *
 * A lease's last write (a take or a renewal, each a compare-and-set) proves
 * this runtime held it then, and its own `until` covers it from there. The
 * first heartbeat answered before that `until` carries it on, for as long as
 * the heartbeats follow each other without a gap: a streak. A heartbeat
 * answered after the last one ran out (the time it waited for a connection
 * counts), or whose compare-and-set failed (its key removed, a server that
 * lost its store), starts a new streak; a lease whose own `until` ran out
 * before that is no longer covered, and is held again only after its own
 * compare-and-set renewal, which fails if another runtime took the job over
 * in the gap. Shared by both brokers.
 */
export class HeldLeases {
  readonly #held = new Map<string, Held>();
  #streak = 0;
  /** The `until` of the last heartbeat written (0: none yet). */
  #heartbeatUntil = 0;
  /** The heartbeat key's revision when this runtime wrote it last. */
  heartbeatRevision: number | undefined;

  get size(): number {
    return this.#held.size;
  }

  /** The lease's last write is this runtime's, with this revision. */
  revisionOf(jobId: string): number | undefined {
    return this.#held.get(jobId)?.revision;
  }

  /** The server that stored the lease's last write, when that server's stream is its only copy. */
  storedOn(jobId: string): string | undefined {
    return this.#held.get(jobId)?.on;
  }

  /** Taken here, and not released, given back or found taken by another since. */
  has(jobId: string): boolean {
    return this.#held.has(jobId);
  }

  /** True until its own `until`, and while a heartbeat streak covers it. */
  holds(jobId: string, now: number): boolean {
    const held = this.#held.get(jobId);
    return held !== undefined && (held.until > now || this.#covers(held, now));
  }

  /** Held by the heartbeat: a renewal of its own has nothing to add. */
  coveredByHeartbeat(jobId: string, now: number): boolean {
    const held = this.#held.get(jobId);
    return held !== undefined && this.#covers(held, now);
  }

  #covers(held: Held, now: number): boolean {
    return held.streak === this.#streak && this.#heartbeatUntil > now;
  }

  /**
   * This runtime wrote the lease (a take or a renewal): its own `until` covers it until the next
   * heartbeat. `on`: the server that stored it, when its stream has no other copy.
   */
  wrote(jobId: string, revision: number, until: number, on?: string): void {
    this.#held.set(jobId, { revision, until, on, streak: -1 });
  }

  forget(jobId: string): void {
    this.#held.delete(jobId);
  }

  /**
   * A heartbeat written with `until`, answered at `answeredAt` (on the
   * clock of the leases' `until`, counted from when it was asked, waits for
   * a connection included); `unbroken`: its compare-and-set held (the key is
   * the one this runtime wrote last). When the last heartbeat ran out before
   * this one was answered, or the key was not ours any more, a new streak
   * starts. The streak takes on every lease not in it whose own `until` had
   * not run out by the answer: the heartbeat was stored before then.
   */
  beat(until: number, revision: number, answeredAt: number, unbroken: boolean): void {
    if (!unbroken || answeredAt >= this.#heartbeatUntil) this.#streak++;
    this.heartbeatRevision = revision;
    this.#heartbeatUntil = until;
    // Not after a broken key: the leases' keys may have gone with it (a server that lost its
    // store). Each is renewed on its own first, and the next heartbeat takes it on.
    if (!unbroken) return;
    for (const held of this.#held.values())
      if (held.streak !== this.#streak && held.until > answeredAt) held.streak = this.#streak;
  }
}
