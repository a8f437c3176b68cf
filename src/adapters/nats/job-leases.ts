import { JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { ServerTime } from "../../kernel/clock.ts";
import { HeldLeases, heartbeatKey, type LeaseValue, leaseRunsUntil, leaseValue } from "../held-leases.ts";
import type { Lease, ListedLease, SupervisionLeases } from "../supervision-leases.ts";
import { isWrongLastSequence, type NatsJobBroker } from "./job-broker.ts";
import { NatsLeaseBucket } from "./lease-bucket.ts";
import type { NatsContext } from "./nats-context.ts";

/**
 * Supervision leases in KV, one key per job, taken and renewed with
 * compare-and-set on the revision, and the runtime's heartbeat
 * (`heartbeat.<hash of the holder>`, same bucket) that renews all of them at
 * once (`held-leases.ts`). A lease is held only while renewed: a runtime that
 * dies stops its heartbeat and another takes the job over once both have
 * run out. Nothing is held that a dead process could leave behind. A lease
 * that goes is purged from the stream, marker and all: the bucket holds the
 * jobs not over, never one message per job ever run.
 */
export class NatsJobLeases implements SupervisionLeases {
  readonly #core: NatsContext;
  readonly #broker: NatsJobBroker;
  /** The bucket the leases are in, shared with every runtime, and the server's clock read there. */
  readonly #bucket: NatsLeaseBucket;
  /** Each lease this runtime wrote last, and its heartbeat. */
  readonly #held = new HeldLeases();
  /**
   * Releases and give-backs not written (NATS down, no answer in time): the
   * lease still names this runtime, and its heartbeat would keep it alive
   * for as long as the runtime runs. Each heartbeat writes them again.
   */
  readonly #owed = new Map<string, { readonly revision: number; readonly over: boolean }>();
  readonly holder: string;

  constructor(core: NatsContext, broker: NatsJobBroker, holder: string) {
    this.#core = core;
    this.#broker = broker;
    this.holder = holder;
    this.#bucket = new NatsLeaseBucket(core, broker);
  }

  /** Creates the leases bucket unless it exists. */
  async provision(): Promise<void> {
    await this.#broker.run("job.leases.provision", (nc) => this.#bucket.open(nc));
  }

  /**
   * True while this runtime's last write of the lease has not run out. Not
   * merely "wrote it once": a runtime whose renewals fail (cut off from NATS)
   * must stop acting as the supervisor by the `until` another runtime reads,
   * or both would supervise the job once that one takes over.
   */
  holds(jobId: string, now = this.#core.clock.now()): boolean {
    return this.#held.holds(jobId, now);
  }

  supervises(jobId: string): boolean {
    return this.#held.has(jobId);
  }

  coveredByHeartbeat(jobId: string, now = this.#core.clock.now()): boolean {
    return this.#held.coveredByHeartbeat(jobId, now);
  }

  /**
   * Writes the heartbeat (compare-and-set on the revision this runtime wrote
   * last): one write renews every lease it covers. A key removed or changed
   * meanwhile is written anew, and starts a streak that covers no lease
   * (each is renewed on its own first).
   */
  heartbeat(ttlMs: number, now = this.#core.clock.now()): Promise<void> {
    if (this.#held.size === 0) return Promise.resolve();
    // Before the operation: its wait for a connection is part of how late the answer is.
    const askedAt = this.#core.clock.now();
    return this.#broker.run("lease.heartbeat", async (nc) => {
      const kv = await this.#bucket.open(nc);
      const key = heartbeatKey(this.holder);
      const until = now + ttlMs;
      const value = leaseValue(this.holder, until, now);
      const known = this.#held.heartbeatRevision;
      let revision: number;
      let unbroken = true;
      try {
        revision = known === undefined ? await kv.create(key, value) : await kv.update(key, value, known);
      } catch (error) {
        if (!(error instanceof JetStreamApiError && (error.code === 10071 || error.code === 10164)))
          throw error;
        unbroken = false;
        const entry = await kv.get(key);
        revision = entry ? await kv.update(key, value, entry.revision) : await kv.create(key, value);
      }
      // Answered when the write came back, on the clock `now` is on.
      this.#held.beat(until, revision, now + (this.#core.clock.now() - askedAt), unbroken);
      await this.#payOwed(nc, kv);
    });
  }

  /** The releases and give-backs owed, written now; one that fails again stays owed. */
  async #payOwed(nc: NatsConnection, kv: KV): Promise<void> {
    for (const [jobId, { revision, over }] of this.#owed) {
      try {
        if (over) await this.#bucket.purge(nc, jobId, revision);
        else await kv.update(jobId, this.#givenBack(), revision);
        this.#owed.delete(jobId);
      } catch (error) {
        // Written by another runtime since: not ours to give back any more.
        if (error instanceof JetStreamApiError && error.code === 10071) this.#owed.delete(jobId);
        else this.#core.logger.debug({ jobId, err: error }, "lease still not given back; tried again");
      }
    }
  }

  #givenBack(): string {
    return leaseValue(this.holder, 0, this.#core.clock.now());
  }

  /**
   * Takes the lease if free, expired or already ours; true when this runtime
   * now holds it. A create first: a new job's lease (every submit takes one)
   * is one request, not a read and a create; a lease that exists (a
   * takeover) costs the failed create more.
   */
  acquire(jobId: string, ttlMs: number, now = this.#core.clock.now()): Promise<boolean> {
    return this.#broker.run("lease.acquire", async (nc) => {
      const kv = await this.#bucket.open(nc);
      const until = now + ttlMs;
      const value = leaseValue(this.holder, until, now);
      try {
        // `kv.create`'s first try, through the client's PubAcks (no request of its own).
        const revision = await this.#broker.writeKey(nc, this.#broker.names.leasesBucket, jobId, value, 0);
        this.#held.wrote(jobId, revision, until, soleCopyOn(nc));
        return true;
      } catch (error) {
        // Taken, or a marker left: the read below decides.
        if (!isWrongLastSequence(error)) throw error;
      }
      const entry = await kv.get(jobId);
      try {
        if (entry?.operation !== "PUT") {
          const revision = entry
            ? await kv.update(jobId, value, entry.revision)
            : await kv.create(jobId, value);
          this.#held.wrote(jobId, revision, until);
          return true;
        }
        const stored = entry.json<LeaseValue>();
        // Another's lease is judged on this runtime's clock: with no reading of the server's
        // yet (no listing read one), one is read first.
        // Not read (no answer in time): judged as written.
        if (stored.holder !== this.holder && this.#bucket.clock.aheadMs(now) === undefined)
          await this.#bucket.clock.readOnce(nc).catch(() => undefined);
        const lease = {
          holder: stored.holder,
          until: this.#bucket.clock.untilFor(stored, entry.created, now),
        };
        if (
          lease.holder !== this.holder &&
          leaseRunsUntil(lease, await this.#heartbeatOf(kv, lease, now)) > now
        )
          return this.#takenByAnother(jobId);
        this.#held.wrote(jobId, await kv.update(jobId, value, entry.revision), until);
        return true;
      } catch (error) {
        // Another write came first (another runtime's, or this one's own renewal): the next try reads it.
        if (error instanceof JetStreamApiError && error.code === 10071) return false;
        throw error;
      }
    });
  }

  /**
   * Found another's, read: this runtime no longer supervises the job (`supervises`), as when a
   * renewal finds it taken (a lost compare-and-set says nothing of whose write won). A deposed supervisor that tried to take it back kept saying it
   * did: its clock went on deciding the job's stall, and its end once its new holder was gone.
   */
  #takenByAnother(jobId: string): false {
    this.#held.forget(jobId);
    return false;
  }

  /** The `until` of the heartbeat of a lease's holder, read only when the lease's own has run out. */
  async #heartbeatOf(kv: KV, lease: Lease, now: number): Promise<number | undefined> {
    if (lease.until === 0 || lease.until > now) return undefined;
    const entry = await kv.get(heartbeatKey(lease.holder));
    return entry?.operation === "PUT"
      ? this.#bucket.clock.untilFor(entry.json<LeaseValue>(), entry.created, now)
      : undefined;
  }

  /**
   * The reading that holds, or one read now; none when the server does not
   * answer. Callers that ask while a read is in flight share it: 40 submits
   * waiting at once made 40 consumers.
   */
  async readServerTime(
    options: { readonly timeoutMs?: number; readonly maxRoundTripMs?: number } = {},
  ): Promise<ServerTime | undefined> {
    // A slow reading read again and not read (no answer): it still holds, kept.
    if (this.#bucket.clock.serverTime(options.maxRoundTripMs) === undefined)
      // Its failure retried as any operation's (a 503 in a leader election): not read, the
      // deadlines and leases of others are read as written.
      await this.#broker
        .run("lease.serverTime", (nc) => this.#bucket.clock.readOnce(nc), options)
        .catch((error: unknown) =>
          this.#core.logger.debug({ err: error }, "server's clock not read; deadlines read as written"),
        );
    return this.#bucket.clock.serverTime();
  }

  /** Extends a held lease with a write of its own; false (and no longer held) when another runtime took it. */
  renew(jobId: string, ttlMs: number, now = this.#core.clock.now()): Promise<boolean> {
    const revision = this.#held.revisionOf(jobId);
    if (revision === undefined) return Promise.resolve(false);
    return this.#broker.run("lease.renew", async (nc) => {
      const kv = await this.#bucket.open(nc);
      const until = now + ttlMs;
      const value = leaseValue(this.holder, until, now);
      try {
        this.#held.wrote(jobId, await kv.update(jobId, value, revision), until);
        return true;
      } catch (error) {
        if (!(error instanceof JetStreamApiError && error.code === 10071)) throw error;
      }
      // Written since: by another runtime, or by this renewal's own earlier try, stored though
      // its answer was lost (the operation tries again). Still ours when it names this runtime.
      const entry = await kv.get(jobId);
      if (entry?.operation !== "PUT") return this.#takenByAnother(jobId);
      const lease = entry.json<LeaseValue>();
      if (lease.holder !== this.holder || lease.until === 0) return this.#takenByAnother(jobId);
      this.#held.wrote(jobId, entry.revision, lease.until);
      return true;
    });
  }

  /** The job is over: our lease goes (only our write of it: a later one, another holder's, stays). */
  async release(jobId: string): Promise<void> {
    const revision = this.#held.revisionOf(jobId);
    const storedOn = this.#held.storedOn(jobId);
    this.#held.forget(jobId);
    if (revision === undefined) return;
    await this.#broker
      .run(
        "lease.release",
        (nc) =>
          storedOn !== undefined && soleCopyOn(nc) === storedOn
            ? this.#bucket.removeAt(nc, revision)
            : this.#bucket.purge(nc, jobId, revision),
        { timeoutMs: 2000 },
      )
      // Best effort by contract (runtime stopping, NATS down): a lease left behind runs out with
      // the runtime's heartbeat, which writes it again meanwhile; the next takeover pass removes
      // one left (its record says the job is over).
      .catch((error: unknown) => this.#owe(jobId, revision, true, error));
  }

  /** Stops supervising a job that goes on: written as run out, so another runtime takes it over at once. */
  async giveBack(jobId: string): Promise<void> {
    const revision = this.#held.revisionOf(jobId);
    this.#held.forget(jobId);
    if (revision === undefined) return;
    await this.#broker
      .run(
        "lease.giveBack",
        async (nc) => {
          try {
            await (await this.#bucket.open(nc)).update(jobId, this.#givenBack(), revision);
          } catch (error) {
            // Another runtime took the lease: nothing to give back.
            if (!(error instanceof JetStreamApiError && error.code === 10071)) throw error;
          }
        },
        { timeoutMs: 2000 },
      )
      // On a clean stop the write is already sent when the stop aborts the wait for its answer,
      // and the server applies it (test/integration/job-lease-release.test.ts). Not applied
      // otherwise (NATS down, no answer in time): owed to the next heartbeat.
      .catch((error: unknown) => this.#owe(jobId, revision, false, error));
  }

  /**
   * A release or give-back not written: the next heartbeat writes it (while
   * this runtime runs, its heartbeat would keep the lease alive). Not when the
   * runtime stops: its heartbeat stops too, and the lease runs out with it.
   */
  #owe(jobId: string, revision: number, over: boolean, error: unknown): void {
    if (this.#core.stopping.aborted) return;
    this.#owed.set(jobId, { revision, over });
    this.#core.logger.debug({ jobId, err: error }, "lease not given back now; the next heartbeat does");
  }

  /**
   * Every job's lease on the server, with its revision (takeover, the reaper, cleanup); `until`
   * is the later of its own and its holder's heartbeat (`NatsLeaseBucket.list`).
   */
  list(now = this.#core.clock.now()): Promise<Array<ListedLease>> {
    return this.#bucket.list(now);
  }

  serverTime(): ServerTime | undefined {
    return this.#bucket.clock.serverTime();
  }

  /** One job's lease, read as `list()` reads it. */
  get(jobId: string, now = this.#core.clock.now()): Promise<ListedLease | undefined> {
    return this.#bucket.get(jobId, now);
  }

  /** Purges the job's lease from the stream (up to `revision` when given), marker and all. */
  remove(jobId: string, revision?: number): Promise<void> {
    return this.#bucket.remove(jobId, revision);
  }

  /** Writes a run-out lease for a job without one (never over an existing lease). */
  enrol(jobId: string): Promise<boolean> {
    return this.#bucket.enrol(jobId);
  }

  /** Purges the bucket's markers and run-out heartbeats: how many keys it purged. */
  purgeMarkers(now = this.#core.clock.now()): Promise<number> {
    return this.#bucket.purgeMarkers(now);
  }
}

/**
 * The server this client is on, when it holds its streams itself (JetStream runs there, not on a
 * hub a leaf node leads to) and they have no other copy (not in a cluster: no cluster named, no
 * other server's address advertised): a lease written there is removed by its sequence while the
 * client is still on that server, which has not restarted since (a restart, with its store or
 * without, gives it another id).
 */
const soleCopyOn = ({ info }: NatsConnection): string | undefined =>
  info?.jetstream !== true || info.cluster !== undefined || (info.connect_urls?.length ?? 0) > 0
    ? undefined
    : info.server_id;
