import type { ServerTime } from "../kernel/clock.ts";

/**
 * A lease: who supervises the job, until when (0: nobody; given back, or
 * never taken). As `list()` gives it, `until` is the later of the lease's own
 * and its holder's heartbeat: when another runtime may take the job over.
 */
export interface Lease {
  readonly holder: string;
  readonly until: number;
}

/** A job's lease as read from the bucket (`until`: with its holder's heartbeat), and its revision. */
export interface ListedLease {
  readonly jobId: string;
  readonly lease: Lease;
  readonly revision: number;
}

/**
 * Who supervises a job, until when: one key per job, taken and renewed with
 * compare-and-set on the revision. A runtime renews all the leases it holds
 * with one write, its heartbeat (`heartbeat()`, every third of the lease): a
 * lease is run out once its own `until` and its holder's heartbeat both have
 * (`held-leases.ts`). The bucket is also the index of the jobs that are not
 * over: a key is written beside the job's record (before its tasks), and
 * goes only once the job has ended (or its submit was rolled back), so
 * takeover and the reaper look at the leases, never at every record kept
 * (a record whose lease's write failed is given one by the cleanup pass).
 */
export interface SupervisionLeases {
  readonly holder: string;
  /** True until the expiry last written (`now`: the runtime's clock); a holder whose renewals fail stops holding. */
  holds(jobId: string, now?: number): boolean;
  /**
   * True once this runtime took the lease, until it releases it, gives it back or finds it
   * taken by another (a renewal or an `acquire` that meets another's): its supervisor, even
   * while its lease has run out (renewals failing, a clock that jumped ahead of the next
   * heartbeat). A runtime that only watches the job: false.
   */
  supervises(jobId: string): boolean;
  /** Takes the lease if free, expired or already ours; true when held now (false: not supervised here). */
  acquire(jobId: string, ttlMs: number, now?: number): Promise<boolean>;
  /**
   * True while this runtime's heartbeat renews the lease: `renew` has nothing
   * to write. False for a lease taken before the heartbeat streak now running
   * began and not renewed since (its holder's heartbeat had run out meanwhile).
   */
  coveredByHeartbeat(jobId: string, now?: number): boolean;
  /**
   * Writes this runtime's heartbeat, renewing every lease it holds that the
   * heartbeat covers; nothing when it holds none.
   */
  heartbeat(ttlMs: number, now?: number): Promise<void>;
  /** Extends a held lease with a write of its own; false (and no longer held) when another runtime took it. */
  renew(jobId: string, ttlMs: number, now?: number): Promise<boolean>;
  /** The job is over: the lease held here goes, and nothing of it stays in the bucket. */
  release(jobId: string): Promise<void>;
  /**
   * Stops supervising a job that goes on (the runtime stops): the lease held
   * here is written as run out (`until` 0), so another runtime takes the job
   * over at once, and its key stays for it to be found. Best effort.
   */
  giveBack(jobId: string): Promise<void>;
  /**
   * Every job's lease on the server, with its revision; `until`: with its
   * holder's heartbeat, on the reader's clock (`leaseUntilFor`): the span
   * its holder gave it counted from the server's stamp of its write, so a
   * reader whose clock runs ahead of the holder's does not take a live
   * lease for run out. `now`: the reader's clock, read just before the call
   * (the runtime's by default); its distance from the server's clock is
   * measured by it (on NATS by the last reading of the server's clock: none
   * before a listing of a bucket not empty, and then each `until` is read as
   * written).
   */
  list(now?: number): Promise<Array<ListedLease>>;
  /**
   * The server's clock as this broker last read it: on NATS, by the last
   * `list()` (its pass's consumer's creation stamp, as the schedule store
   * reads it: `ScheduleStore.serverTime`); in memory, the server's clock
   * now. Undefined before any reading (none: the bucket was empty), or while
   * it may be off (this host slept or its clock was set since, or it is old).
   */
  serverTime(): ServerTime | undefined;
  /**
   * `serverTime()`, or when it has none, one read now (on NATS: the creation
   * stamp of a consumer made for it on the leases' stream, two round trips),
   * kept as `serverTime()` then. Undefined when the server does not answer.
   * What judges another runtime's stamps by its own clock reads it first.
   * `timeoutMs`: how long it may take, retries included (the operation
   * deadline by default). `maxRoundTripMs`: a reading whose round trip was
   * longer is read again once it is a second old (at most once a second;
   * kept if that read fails).
   */
  readServerTime(options?: {
    readonly timeoutMs?: number;
    readonly maxRoundTripMs?: number;
  }): Promise<ServerTime | undefined>;
  /** One job's lease as `list()` reads it (with its holder's heartbeat), in one or two reads; undefined: none. */
  get(jobId: string, now?: number): Promise<ListedLease | undefined>;
  /**
   * Removes the job's lease whoever holds it (its job is over or gone);
   * with `revision`, only up to that revision: a lease written since stays.
   */
  remove(jobId: string, revision?: number): Promise<void>;
  /** Writes a run-out lease for a job that has none, so takeover finds it; false when it has one. */
  enrol(jobId: string): Promise<boolean>;
}
