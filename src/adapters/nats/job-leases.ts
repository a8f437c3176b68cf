import { JetStreamApiError, jetstreamManager, StorageType } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { NatsJobBroker } from "./job-broker.ts";
import type { NatsContext } from "./nats-context.ts";
import { ensureBucket, scanBucket } from "./streams.ts";

/** Who supervises a job, until when. Versioned like every persisted record. */
export interface LeaseRecord {
  readonly v: 1;
  readonly holder: string;
  readonly until: number;
}

/**
 * Supervision leases in KV, one key per job, taken and renewed with
 * compare-and-set on the revision. A lease is held only while renewed: a
 * runtime that dies stops renewing and another takes the job over once
 * `until` has passed. Nothing is held that a dead process could leave behind.
 */
export class NatsJobLeases {
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

  /** Takes the lease if free, expired or already ours; true when this runtime now holds it. */
  acquire(jobId: string, ttlMs: number, now = this.#core.clock.now()): Promise<boolean> {
    return this.#broker.run("lease.acquire", async (nc) => {
      const kv = await this.#bucket(nc);
      const until = now + ttlMs;
      const value = JSON.stringify({ v: 1, holder: this.holder, until } satisfies LeaseRecord);
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

  /** Gives the lease up (job finished, runtime stopping). */
  async release(jobId: string): Promise<void> {
    const revision = this.#held.get(jobId)?.revision;
    this.#held.delete(jobId);
    if (revision === undefined) return;
    await this.#broker
      .run("lease.release", async (nc) => (await this.#bucket(nc)).delete(jobId, { previousSeq: revision }), {
        timeoutMs: 2000,
      })
      // Best effort by contract (runtime stopping, NATS down): an unreleased lease expires after its TTL.
      // On a clean stop the delete is already sent when the stop aborts the wait for its answer,
      // and the server applies it (test/integration/job-lease-release.test.ts): not worth a line.
      .catch((error: unknown) => {
        if (this.#core.stopping.aborted) return;
        this.#core.logger.debug({ jobId, err: error }, "lease not released; it expires");
      });
  }

  /** Every lease on the server (cleanup). */
  list(): Promise<Array<{ jobId: string; lease: LeaseRecord }>> {
    return this.#broker.run("lease.list", async (nc) => {
      await this.#bucket(nc);
      // The broker's handles of this client: no new JetStream manager (and its API check) per pass.
      const { js, jsm } = await this.#broker.handles(nc);
      const leases = await scanBucket(js, jsm, this.#broker.names.leasesBucket);
      return [...leases].map(([jobId, value]) => ({ jobId, lease: JSON.parse(value) as LeaseRecord }));
    });
  }

  remove(jobId: string): Promise<void> {
    return this.#broker.run("lease.remove", async (nc) => (await this.#bucket(nc)).purge(jobId));
  }
}
