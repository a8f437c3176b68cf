import { createHash } from "node:crypto";
import { type Clock, monotonicNow } from "../kernel/clock.ts";
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

/**
 * A moment, or a deadline, on both of a holder's clocks: its monotonic clock
 * (`monotonicNow`), which no one sets, and its wall clock (`now()`), the one
 * its leases' `until` is written on.
 */
export interface HolderTime {
  readonly monotonic: number;
  readonly wall: number;
}

/** The holder's clocks read now. */
export const holderTime = (clock: Clock): HolderTime => ({
  monotonic: monotonicNow(clock),
  wall: clock.now(),
});

/**
 * Until when a write of `ttlMs`, asked for now with `now` (the wall-clock
 * time it writes), holds for its writer: counted from before the write on the
 * monotonic clock, and by the `until` it writes on the wall clock.
 */
export const heldUntilAfter = (clock: Clock, ttlMs: number, now: number): HolderTime => ({
  monotonic: monotonicNow(clock) + ttlMs,
  wall: now + ttlMs,
});

/** `until` not run out at `at`, by both clocks. */
const runsPast = (until: HolderTime, at: HolderTime): boolean =>
  until.monotonic > at.monotonic && until.wall > at.wall;

const never: HolderTime = { monotonic: Number.NEGATIVE_INFINITY, wall: Number.NEGATIVE_INFINITY };

interface Held {
  readonly revision: number;
  /** Until when the job's own lease holds for its holder, by both its clocks (`HeldLeases`). */
  readonly heldUntil: HolderTime;
  /** The heartbeat streak that covers it (-1: none; its own `heldUntil` does until a renewal). */
  streak: number;
  /** The renewals asked for since its last answered write, each until when it would hold (`adopt`). */
  readonly asked: Array<HolderTime>;
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
 *
 * A write holds only while both of the holder's clocks say so (`HolderTime`):
 * counted on the monotonic clock from when it was asked for, which is before
 * the server stamped it, where others count it from; and by the `until` it
 * wrote, against the wall clock. By the wall clock alone, a holder whose clock
 * was set back a minute (NTP) held its leases a minute longer than others read
 * them, and back on the server after a cut wrote its job's end beside the
 * runtime that took it over (test/integration/lease-holder-clock-step-back.test.ts).
 * By the monotonic clock alone, a host suspended a minute (a VM paused, a
 * laptop asleep: `performance.now()` does not count it) held on resume a lease
 * everyone else had read run out. A wall clock set forward gives the leases up
 * early: safe, others still read them live by the server's stamps until they
 * run out, then take the jobs over.
 */
export class HeldLeases {
  readonly #held = new Map<string, Held>();
  #streak = 0;
  /** Until when the last heartbeat written holds (none yet: never). */
  #heartbeatUntil = never;
  /** The heartbeat key's revision when this runtime wrote it last. */
  heartbeatRevision: number | undefined;

  get size(): number {
    return this.#held.size;
  }

  /** The lease's last write is this runtime's, with this revision. */
  revisionOf(jobId: string): number | undefined {
    return this.#held.get(jobId)?.revision;
  }

  /** Taken here, and not released, given back or found taken by another since. */
  has(jobId: string): boolean {
    return this.#held.has(jobId);
  }

  /** True until its own `heldUntil`, and while a heartbeat streak covers it. */
  holds(jobId: string, now: HolderTime): boolean {
    const held = this.#held.get(jobId);
    return held !== undefined && (runsPast(held.heldUntil, now) || this.#covers(held, now));
  }

  /** Held by the heartbeat: a renewal of its own has nothing to add. */
  coveredByHeartbeat(jobId: string, now: HolderTime): boolean {
    const held = this.#held.get(jobId);
    return held !== undefined && this.#covers(held, now);
  }

  #covers(held: Held, now: HolderTime): boolean {
    return held.streak === this.#streak && runsPast(this.#heartbeatUntil, now);
  }

  /** This runtime wrote the lease (a take or a renewal), good until `heldUntil`: it covers it until the next heartbeat. */
  wrote(jobId: string, revision: number, heldUntil: HolderTime): void {
    this.#held.set(jobId, { revision, heldUntil, streak: -1, asked: [] });
  }

  /** A renewal good until `heldUntil` is asked for: kept until a write is answered (`adopt`). */
  asking(jobId: string, heldUntil: HolderTime): void {
    this.#held.get(jobId)?.asked.push(heldUntil);
  }

  /**
   * A write of this runtime's found stored (revision `revision`, wall-clock
   * `until` as written), its answer lost: it holds from its own ask, the
   * renewal asked for that wrote that `until` (`ownAsk`: the one finding
   * it). None that did: the earliest asked, never later than the write. A wall clock set meanwhile says nothing of how long ago it
   * was asked: counted from a difference of written `until`s, a clock set
   * back 5 s held the lease 5 s past a lease after that write.
   */
  adopt(jobId: string, revision: number, until: number, ownAsk: HolderTime): void {
    const asked = [...(this.#held.get(jobId)?.asked ?? []), ownAsk];
    const same = asked.filter((ask) => ask.wall === until);
    const from = same.length > 0 ? same : asked;
    const monotonic = Math.min(...from.map((ask) => ask.monotonic));
    this.wrote(jobId, revision, { monotonic, wall: until });
  }

  forget(jobId: string): void {
    this.#held.delete(jobId);
  }

  /**
   * A heartbeat good until `heldUntil`, answered at `answeredAt` (both
   * counted from when it was asked, waits for a connection included);
   * `unbroken`: its compare-and-set held (the key is the one this runtime
   * wrote last). When the last heartbeat ran out before this one was
   * answered, or the key was not ours any more, a new streak starts. The
   * streak takes on every lease not in it whose own `heldUntil` had not run
   * out by the answer: the heartbeat was stored before then.
   */
  beat(heldUntil: HolderTime, revision: number, answeredAt: HolderTime, unbroken: boolean): void {
    if (!unbroken || !runsPast(this.#heartbeatUntil, answeredAt)) this.#streak++;
    this.heartbeatRevision = revision;
    this.#heartbeatUntil = heldUntil;
    // Not after a broken key: the leases' keys may have gone with it (a server that lost its
    // store). Each is renewed on its own first, and the next heartbeat takes it on.
    if (!unbroken) return;
    for (const held of this.#held.values())
      if (held.streak !== this.#streak && runsPast(held.heldUntil, answeredAt)) held.streak = this.#streak;
  }
}
