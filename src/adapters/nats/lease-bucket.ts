import { JetStreamApiError, jetstreamManager, StorageType } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { heartbeatKey, isRunOutHeartbeat, jobLeases, type LeaseValue, leaseValue } from "../held-leases.ts";
import type { ListedLease } from "../supervision-leases.ts";
import { scanBucketEntries } from "./bucket-reads.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import { LeaseClock } from "./lease-clock.ts";
import type { NatsContext } from "./nats-context.ts";
import { consumerStamp } from "./server-facts.ts";
import { ensureBucket, isNoMessage } from "./streams.ts";

/**
 * The leases bucket on NATS as every runtime shares it: made once per
 * client (`open`), its leases read as the takeover pass and the reaper read
 * them (`list`, `get`: each with its holder's heartbeat), its keys written
 * and purged for upkeep (`enrol`, `remove`, `purgeMarkers`), and the
 * server's clock its listings read (`clock`). What one runtime holds and
 * writes as a holder is `NatsJobLeases`' (job-leases.ts).
 */
export class NatsLeaseBucket {
  readonly #core: NatsContext;
  readonly #broker: NatsJobBroker;
  readonly #kv: (nc: NatsConnection, make: () => Promise<KV>) => Promise<KV>;
  /** The server's clock as the last `list()`, or a read of its own, read it. */
  readonly clock = new LeaseClock(
    async (nc) => {
      await this.open(nc);
      const { jsm } = await this.#broker.handles(nc);
      return consumerStamp(jsm, `KV_${this.#broker.names.leasesBucket}`);
    },
    () => this.#core.connection.current(),
  );

  constructor(core: NatsContext, broker: NatsJobBroker) {
    this.#core = core;
    this.#broker = broker;
    this.#kv = broker.setups.once();
  }

  /** The bucket on this client, made unless it exists. */
  open(nc: NatsConnection): Promise<KV> {
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
   * Every job's lease on the server, with its revision (takeover, the
   * reaper, cleanup); `until` is the later of its own and its holder's
   * heartbeat, read in the same scan.
   */
  list(now = this.#core.clock.now()): Promise<Array<ListedLease>> {
    return this.#broker.run("lease.list", async (nc) => {
      await this.open(nc);
      // The broker's handles of this client: no new JetStream manager (and its API check) per pass.
      const { js, jsm } = await this.#broker.handles(nc);
      const entries = await scanBucketEntries(js, jsm, this.#broker.names.leasesBucket, ">", this.clock.take);
      return jobLeases(
        [...entries].map(([key, entry]) => ({ key, ...entry })),
        this.clock.aheadMs(now),
      );
    });
  }

  /** One job's lease, read as `list()` reads it: its key, then its holder's heartbeat (none for a run-out one). */
  get(jobId: string, now = this.#core.clock.now()): Promise<ListedLease | undefined> {
    return this.#broker.run("lease.get", async (nc) => {
      const kv = await this.open(nc);
      const entry = await kv.get(jobId);
      if (entry?.operation !== "PUT") return undefined;
      const lease = entry.json<LeaseValue>();
      const beat = lease.until === 0 ? null : await kv.get(heartbeatKey(lease.holder));
      const read = beat?.operation === "PUT" ? [entry, beat] : [entry];
      return jobLeases(
        read.map((e) => ({
          key: e.key,
          value: e.string(),
          revision: e.revision,
          storedAt: e.created.getTime(),
        })),
        this.clock.aheadMs(now),
      )[0];
    });
  }

  /**
   * Purges the job's lease from the stream (up to `revision` when given),
   * marker and all; markers that older versions left (a release was a
   * delete) go the same way, from `purgeMarkers`.
   */
  remove(jobId: string, revision?: number): Promise<void> {
    return this.#broker.run("lease.remove", (nc) => this.purge(nc, jobId, revision));
  }

  /** Writes a run-out lease for a job without one (KV create: never over an existing lease). */
  enrol(jobId: string): Promise<boolean> {
    const value = leaseValue("", 0, this.#core.clock.now());
    return this.#broker.run("lease.enrol", async (nc) => {
      try {
        await (await this.open(nc)).create(jobId, value);
        return true;
      } catch (error) {
        if (error instanceof JetStreamApiError && error.code === 10071) return false; // it has one
        throw error;
      }
    });
  }

  /**
   * Purges the delete and purge markers in the bucket (left by versions whose
   * release was a KV delete, or by a purge that failed), and the heartbeats
   * that ran out (runtimes gone): each is one more message every lease
   * listing reads. Returns how many keys it purged. A runtime whose
   * heartbeat was purged and that still runs writes it anew, and renews its
   * leases one by one first (`held-leases.ts`).
   */
  purgeMarkers(now = this.#core.clock.now()): Promise<number> {
    return this.#broker.run("lease.purgeMarkers", async (nc) => {
      await this.open(nc);
      const { js, jsm } = await this.#broker.handles(nc);
      const entries = await scanBucketEntries(js, jsm, this.#broker.names.leasesBucket);
      let purged = 0;
      const aheadMs = this.clock.aheadMs(now);
      for (const [key, entry] of entries) {
        const { value, revision } = entry;
        if (value !== undefined && !isRunOutHeartbeat({ key, ...entry }, now, aheadMs)) continue;
        await this.purge(nc, key, revision);
        purged++;
      }
      return purged;
    });
  }

  /**
   * Removes the lease stored at `revision` by its sequence; nothing when it is not there (written
   * again since: the bucket keeps one message a key; or removed already). About 100 µs less of the
   * server's CPU than `purge`, but blind to the key: only for a sequence known to be of this
   * bucket's stream as it is now (`soleCopyOn` in job-leases.ts), and never on a cluster, where
   * nats-server 2.9.10 resets a stream's group on a delete past its end.
   */
  async removeAt(nc: NatsConnection, revision: number): Promise<void> {
    await this.open(nc);
    await this.#broker
      .acks(nc)
      .request(`$JS.API.STREAM.MSG.DELETE.KV_${this.#broker.names.leasesBucket}`, {
        seq: revision,
        no_erase: true,
      })
      .catch((error: unknown) => {
        if (!isNoMessage(error)) throw error;
      });
  }

  /** Removes the key's messages up to `revision` (all without it): a write made since stays. */
  async purge(nc: NatsConnection, jobId: string, revision?: number): Promise<void> {
    await this.open(nc);
    const bucket = this.#broker.names.leasesBucket;
    // `jsm.streams.purge`'s request, through the client's PubAcks: no request of nats.js's a job.
    await this.#broker.acks(nc).request(`$JS.API.STREAM.PURGE.KV_${bucket}`, {
      filter: `$KV.${bucket}.${jobId}`,
      ...(revision === undefined ? {} : { seq: revision + 1 }),
    });
  }
}
