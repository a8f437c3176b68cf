import { JetStreamApiError, jetstreamManager, StorageType } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Lease, SupervisionLeases } from "../supervision-leases.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import type { NatsContext } from "./nats-context.ts";
import { ensureBucket, scanBucketEntries } from "./streams.ts";

/** Who supervises a job, until when. Versioned like every persisted record. */
export interface LeaseRecord extends Lease {
  readonly v: 1;
}

/**
 * Supervision leases in KV, one key per job, taken and renewed with
 * compare-and-set on the revision. A lease is held only while renewed: a
 * runtime that dies stops renewing and another takes the job over once
 * `until` has passed. Nothing is held that a dead process could leave behind.
 * A lease that goes is purged from the stream, marker and all: the bucket
 * holds the jobs not over, never one message per job ever run.
 */
export class NatsJobLeases implements SupervisionLeases {
  readonly #core: NatsContext;
  readonly #broker: NatsJobBroker;
  readonly #kv: (nc: NatsConnection, make: () => Promise<KV>) => Promise<KV>;
  /** Each lease this runtime wrote last: its revision and the `until` it wrote. */
  readonly #held = new Map<string, { readonly revision: number; readonly until: number }>();
  readonly holder: string;

  constructor(core: NatsContext, broker: NatsJobBroker, holder: string) {
    this.#core = core;
    this.#broker = broker;
    this.holder = holder;
    this.#kv = broker.setups.once();
  }

  /** Creates the leases bucket unless it exists. */
  async provision(): Promise<void> {
    await this.#broker.run("job.leases.provision", (nc) => this.#bucket(nc));
  }

  #bucket(nc: NatsConnection): Promise<KV> {
    return this.#kv(nc, async () =>
      ensureBucket(
        nc,
        await jetstreamManager(nc),
        this.#broker.names.leasesBucket,
        { history: 1, storage: StorageType.File },
        this.#broker.replicas,
      ),
    );
  }

  /**
   * True while this runtime's last write of the lease has not run out. Not
   * merely "wrote it once": a runtime whose renewals fail (cut off from NATS)
   * must stop acting as the supervisor by the `until` another runtime reads,
   * or both would supervise the job once that one takes over.
   */
  holds(jobId: string, now = this.#core.clock.now()): boolean {
    const held = this.#held.get(jobId);
    return held !== undefined && held.until > now;
  }

  /**
   * Takes the lease if free, expired or already ours; true when this runtime
   * now holds it. A create first: a new job's lease (every submit takes one)
   * is one request, not a read and a create; a lease that exists (a
   * takeover) costs the failed create more.
   */
  acquire(jobId: string, ttlMs: number, now = this.#core.clock.now()): Promise<boolean> {
    return this.#broker.run("lease.acquire", async (nc) => {
      const kv = await this.#bucket(nc);
      const until = now + ttlMs;
      const value = JSON.stringify({ v: 1, holder: this.holder, until } satisfies LeaseRecord);
      try {
        this.#held.set(jobId, { revision: await kv.create(jobId, value), until });
        return true;
      } catch (error) {
        // Taken, or a marker left: the read below decides.
        if (!(error instanceof JetStreamApiError && (error.code === 10071 || error.code === 10164)))
          throw error;
      }
      const entry = await kv.get(jobId);
      try {
        if (entry?.operation !== "PUT") {
          const revision = entry
            ? await kv.update(jobId, value, entry.revision)
            : await kv.create(jobId, value);
          this.#held.set(jobId, { revision, until });
          return true;
        }
        const lease = entry.json<LeaseRecord>();
        if (lease.holder !== this.holder && lease.until > now) return false;
        this.#held.set(jobId, { revision: await kv.update(jobId, value, entry.revision), until });
        return true;
      } catch (error) {
        if (error instanceof JetStreamApiError && error.code === 10071) return false; // another runtime won
        throw error;
      }
    });
  }

  /** Extends a held lease; false (and no longer held) when another runtime took it. */
  renew(jobId: string, ttlMs: number, now = this.#core.clock.now()): Promise<boolean> {
    const revision = this.#held.get(jobId)?.revision;
    if (revision === undefined) return Promise.resolve(false);
    return this.#broker.run("lease.renew", async (nc) => {
      const kv = await this.#bucket(nc);
      const until = now + ttlMs;
      const value = JSON.stringify({ v: 1, holder: this.holder, until } satisfies LeaseRecord);
      try {
        this.#held.set(jobId, { revision: await kv.update(jobId, value, revision), until });
        return true;
      } catch (error) {
        if (error instanceof JetStreamApiError && error.code === 10071) {
          this.#held.delete(jobId);
          return false;
        }
        throw error;
      }
    });
  }

  /** The job is over: our lease goes (only our write of it: a later one, another holder's, stays). */
  async release(jobId: string): Promise<void> {
    const revision = this.#held.get(jobId)?.revision;
    this.#held.delete(jobId);
    if (revision === undefined) return;
    await this.#broker
      .run("lease.release", (nc) => this.#purge(nc, jobId, revision), { timeoutMs: 2000 })
      // Best effort by contract (runtime stopping, NATS down): a lease left behind has run out
      // by its TTL, and the next takeover pass removes it (its record says the job is over).
      .catch((error: unknown) => this.#notDone("lease not released; it expires", jobId, error));
  }

  /** Stops supervising a job that goes on: written as run out, so another runtime takes it over at once. */
  async giveBack(jobId: string): Promise<void> {
    const revision = this.#held.get(jobId)?.revision;
    this.#held.delete(jobId);
    if (revision === undefined) return;
    const value = JSON.stringify({ v: 1, holder: this.holder, until: 0 } satisfies LeaseRecord);
    await this.#broker
      .run("lease.giveBack", async (nc) => (await this.#bucket(nc)).update(jobId, value, revision), {
        timeoutMs: 2000,
      })
      // On a clean stop the write is already sent when the stop aborts the wait for its answer,
      // and the server applies it (test/integration/job-lease-release.test.ts). Not applied
      // (another runtime took the lease, NATS down): the lease runs out by its TTL instead.
      .catch((error: unknown) => this.#notDone("lease not given back; it expires", jobId, error));
  }

  #notDone(message: string, jobId: string, error: unknown): void {
    if (this.#core.stopping.aborted) return;
    this.#core.logger.debug({ jobId, err: error }, message);
  }

  /** Every lease on the server, with its revision (takeover, the reaper, cleanup). */
  list(): Promise<Array<{ jobId: string; lease: LeaseRecord; revision: number }>> {
    return this.#broker.run("lease.list", async (nc) => {
      await this.#bucket(nc);
      // The broker's handles of this client: no new JetStream manager (and its API check) per pass.
      const { js, jsm } = await this.#broker.handles(nc);
      const entries = await scanBucketEntries(js, jsm, this.#broker.names.leasesBucket);
      const leases: Array<{ jobId: string; lease: LeaseRecord; revision: number }> = [];
      for (const [jobId, { value, revision }] of entries)
        if (value !== undefined) leases.push({ jobId, lease: JSON.parse(value) as LeaseRecord, revision });
      return leases;
    });
  }

  /**
   * Purges the job's lease from the stream (up to `revision` when given),
   * marker and all; markers that older versions left (a release was a
   * delete) go the same way, from `purgeMarkers`.
   */
  remove(jobId: string, revision?: number): Promise<void> {
    return this.#broker.run("lease.remove", (nc) => this.#purge(nc, jobId, revision));
  }

  /** Writes a run-out lease for a job without one (KV create: never over an existing lease). */
  enrol(jobId: string): Promise<boolean> {
    const value = JSON.stringify({ v: 1, holder: "", until: 0 } satisfies LeaseRecord);
    return this.#broker.run("lease.enrol", async (nc) => {
      try {
        await (await this.#bucket(nc)).create(jobId, value);
        return true;
      } catch (error) {
        if (error instanceof JetStreamApiError && error.code === 10071) return false; // it has one
        throw error;
      }
    });
  }

  /**
   * Purges the delete and purge markers in the bucket (left by versions whose
   * release was a KV delete, or by a purge that failed): each is one more
   * message every lease listing reads. Returns how many keys it purged.
   */
  purgeMarkers(): Promise<number> {
    return this.#broker.run("lease.purgeMarkers", async (nc) => {
      await this.#bucket(nc);
      const { js, jsm } = await this.#broker.handles(nc);
      const entries = await scanBucketEntries(js, jsm, this.#broker.names.leasesBucket);
      let purged = 0;
      for (const [jobId, { value, revision }] of entries) {
        if (value !== undefined) continue;
        await this.#purge(nc, jobId, revision);
        purged++;
      }
      return purged;
    });
  }

  /** Removes the key's messages up to `revision` (all without it): a write made since stays. */
  async #purge(nc: NatsConnection, jobId: string, revision?: number): Promise<void> {
    await this.#bucket(nc);
    const { jsm } = await this.#broker.handles(nc);
    const bucket = this.#broker.names.leasesBucket;
    await jsm.streams.purge(`KV_${bucket}`, {
      filter: `$KV.${bucket}.${jobId}`,
      ...(revision === undefined ? {} : { seq: revision + 1 }),
    });
  }
}
