import { randomUUID } from "node:crypto";
import {
  DeliverPolicy,
  JetStreamApiCodes,
  type JetStreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { superviseLoop } from "../../effects/supervise-loop.ts";
import { RevisionConflict } from "../../kernel/errors.ts";
import type { Logger } from "../../kernel/logger.ts";
import { defaultPermitLeaseMs } from "../../kernel/queue-settings.ts";
import { permitsConsumer, targetPermitsConsumer } from "../names.ts";
import type { PermitKind, QueueControls, TargetPool } from "../queue-controls.ts";
import { scanBucketEntries } from "./bucket-reads.ts";
import { isPermissionViolation } from "./classify-error.ts";
import { publishNote, watchNotes } from "./core-notes.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import type { NatsContext } from "./nats-context.ts";
import { type PermitMessage, publishPermits } from "./permit-publishes.ts";
import { pullFreePermits, takeFrom } from "./permit-pulls.ts";
import { seedLostPermits } from "./permit-seeds.ts";
import { poolConsumers } from "./pool-consumers.ts";
import { closeWhenEnded, pullLoop } from "./pull-loops.ts";
import { ensureBucket, ensureStream, isNotFound, nanos } from "./streams.ts";
import { deleteMessages } from "./subject-messages.ts";

const encoder = new TextEncoder();

/** JetStream "wrong last sequence": a compare-and-set lost. */
const isWrongLastSequence = (error: unknown): boolean =>
  (error as { code?: unknown })?.code === JetStreamApiCodes.StreamWrongLastSequence ||
  /wrong last sequence/.test(String(error));

/**
 * Queue controls on NATS: the settings in the KV bucket `<prefix>_queues`
 * (file storage, history 1, key = queue), the permits in the work-queue
 * stream `<prefix>_permits` (file storage), one subject and one durable pull
 * consumer per queue and kind (`max_deliver: -1`: a permit is never used
 * up; `ack_wait` = the queue's `permitLeaseMs`: a crashed holder's permit comes back).
 */
export const natsQueueControls = (
  core: NatsContext,
  broker: NatsJobBroker,
  log: Logger,
): QueueControls & { provision(): Promise<void> } => {
  const names = broker.names;
  const buckets = broker.setups.once<KV>();
  const bucket = (nc: NatsConnection): Promise<KV> =>
    buckets(nc, async () =>
      ensureBucket(
        nc,
        (await broker.handles(nc)).jsm,
        names.queuesBucket,
        { history: 1, storage: StorageType.File },
        broker.replicas,
      ),
    );
  const streams = broker.setups.once<void>();
  const permitsStream = (nc: NatsConnection, jsm: JetStreamManager): Promise<void> =>
    streams(nc, async () => {
      await ensureStream(
        jsm,
        {
          name: names.permitsStream,
          subjects: [`${core.options.prefix}.permits.>`],
          retention: RetentionPolicy.Workqueue,
          storage: StorageType.File,
          duplicate_window: nanos(120_000),
        },
        broker.replicas,
      );
    });
  const targetStreams = broker.setups.cache<Map<string, Promise<void>>>();
  /** The queue's target permits stream: made by the admin's configure; a worker only looks it up. */
  const targetStream = (nc: NatsConnection, jsm: JetStreamManager, queue: string): Promise<void> => {
    let known = targetStreams.get(nc);
    if (!known) {
      known = new Map();
      targetStreams.set(nc, known);
    }
    const found = known.get(queue);
    if (found) return found;
    const made = ensureStream(
      jsm,
      {
        name: names.targetPermitsStream(queue),
        subjects: [`${core.options.prefix}.tpermits.${queue}.>`],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        duplicate_window: nanos(120_000),
      },
      broker.replicas,
    ).then(() => undefined);
    const cache = known;
    cache.set(queue, made);
    made.catch(() => {
      if (cache.get(queue) === made) cache.delete(queue);
    });
    return made;
  };
  const pools = poolConsumers(
    broker,
    async (nc, jsm, stream) => {
      if (stream === names.permitsStream) await permitsStream(nc, jsm);
    },
    log,
  );
  const consumerFor = pools.consumerFor;
  /**
   * A pool's consumer; a taker's (`refill`) publishes the queue's permits again when it finds
   * them lost with the consumer. Not `setPermits`, which rewrites the pool itself.
   */
  const consumerOf = (nc: NatsConnection, queue: string, kind: PermitKind, leaseMs: number, refill = true) =>
    consumerFor(
      nc,
      names.permitsStream,
      permitsConsumer(queue, kind),
      names.permitsSubject(queue, kind),
      leaseMs,
      refill ? () => seedPool(nc, queue, kind) : undefined,
    );
  /** The pool's permits published again when its subject holds none, from the stored record. */
  const seedPool = async (nc: NatsConnection, queue: string, kind: PermitKind) => {
    const { js, jsm } = await broker.handles(nc);
    const stream = names.permitsStream;
    const subject = names.permitsSubject(queue, kind);
    const record = async () => {
      const entry = await (await bucket(nc)).get(queue);
      return entry?.operation === "PUT" ? entry.string() : undefined;
    };
    return seedLostPermits({ js, jsm, stream, subject, queue, kind, record }, log);
  };

  const fills = broker.setups.cache<Map<string, Promise<void>>>();
  /**
   * A target pool, filled on its first use by any process: when its marker
   * (`<subject>.filled`, which no consumer reads) is missing, its permits
   * then the marker are published, with fixed ids: fillers at once within
   * the server's duplicate window (2 min) publish one pool. Once per client.
   */
  const filledPool = (nc: NatsConnection, queue: string, pool: TargetPool, kind: PermitKind) => {
    let known = fills.get(nc);
    if (!known) {
      known = new Map();
      fills.set(nc, known);
    }
    const subject = names.targetPermitsSubject(queue, pool.target, pool.round, kind);
    const found = known.get(subject);
    if (found) return found;
    const filled = (async () => {
      const { js, jsm } = await broker.handles(nc);
      await targetStream(nc, jsm, queue);
      const marker = `${subject}.filled`;
      const made = await jsm.streams
        .getMessage(names.targetPermitsStream(queue), { last_by_subj: marker })
        .catch((error) => {
          if (isNotFound(error)) return null;
          throw error;
        });
      if (made) return;
      const id = `${queue}.${pool.target}.${pool.round}.${kind}`;
      await publishPermits(js, subject, pool.size, id);
      await js.publish(marker, "", { msgID: `${id}.filled` });
    })();
    const cache = known;
    cache.set(subject, filled);
    filled.catch(() => {
      if (cache.get(subject) === filled) cache.delete(subject);
    });
    return filled;
  };

  return {
    // The bucket and the permits stream, for runtimes that may not create them (workers).
    provision: () =>
      broker.run("queue.controls.provision", async (nc) => {
        await bucket(nc);
        await permitsStream(nc, (await broker.handles(nc)).jsm);
      }),
    getSettings: (queue) =>
      broker.run("queue.settings.get", async (nc) => {
        const entry = await (await bucket(nc)).get(queue);
        if (entry?.operation !== "PUT") return undefined;
        return { value: entry.string(), revision: entry.revision };
      }),
    writeSettings: (queue, value, revision) =>
      broker.run(
        "queue.settings.write",
        async (nc) => {
          const kv = await bucket(nc);
          try {
            if (revision !== undefined) return await kv.update(queue, encoder.encode(value), revision);
            // A key deleted by hand reads as absent: `create` writes over its marker.
            return await kv.create(queue, encoder.encode(value));
          } catch (error) {
            if (isWrongLastSequence(error))
              throw new RevisionConflict({ message: `queue ${queue} changed concurrently`, key: queue });
            throw error;
          }
        },
        { retry: { attempts: 1, initialDelayMs: 0 } },
      ),
    // Not `kv.create`, which writes over a deletion marker: the key's expected last sequence 0
    // fails on any message of it, a marker included. A retry after a write that got through
    // finds its own record: not written here, and there all the same.
    restoreSettings: (queue, value) =>
      broker.run("queue.settings.restore", async (nc) => {
        const wrote = await bucket(nc)
          .then((kv) => kv.put(queue, encoder.encode(value), { previousSeq: 0 }))
          .then(
            () => true as const,
            (error: unknown) => {
              if (isWrongLastSequence(error)) return false as const;
              // The bucket's create or the write: this user may only read the queues bucket.
              if (isPermissionViolation(error)) return "refused" as const;
              throw error;
            },
          );
        if (wrote === "refused") return wrote;
        await permitsStream(nc, (await broker.handles(nc)).jsm);
        for (const kind of ["concurrency", "rate"] as const) await seedPool(nc, queue, kind);
        return wrote;
      }),
    listSettings: () =>
      broker.run("queue.settings.list", async (nc) => {
        await bucket(nc);
        const { js, jsm } = await broker.handles(nc);
        const entries = await scanBucketEntries(js, jsm, names.queuesBucket);
        return [...entries.entries()].flatMap(([queue, { value }]) =>
          value === undefined ? [] : [{ queue, value }],
        );
      }),
    watchSettings: (queue, onValue, signal) =>
      superviseLoop(
        core.connection,
        async (nc, s) => {
          // Nothing stored for the queue (never written, or a store made again since this
          // watch was placed): the consumer below delivers nothing, so that is said first
          // (revision 0); a write made meanwhile is still delivered by the consumer after it.
          if (!(await (await bucket(nc)).get(queue))) onValue(undefined, 0);
          const { js, jsm } = await broker.handles(nc);
          const stream = `KV_${names.queuesBucket}`;
          const consumer = await js.consumers.get(stream, {
            filter_subjects: `$KV.${names.queuesBucket}.${queue}`,
            deliver_policy: DeliverPolicy.LastPerSubject,
            inactive_threshold: 60_000,
          });
          try {
            const messages = await consumer.consume({ ...pullLoop });
            const stopped = closeWhenEnded(messages, nc, s);
            try {
              for await (const m of messages) {
                const operation = m.headers?.get("KV-Operation");
                const gone = operation === "DEL" || operation === "PURGE" || m.data.length === 0;
                onValue(gone ? undefined : m.string(), m.seq);
              }
            } finally {
              stopped.dispose();
            }
          } finally {
            // A stopped worker leaves no consumer behind (it would expire after a minute); best effort.
            if (s.aborted) {
              const name = (await consumer.info(true).catch(() => undefined))?.name;
              if (name) await jsm.consumers.delete(stream, name).catch(() => undefined);
            }
          }
        },
        signal,
        { name: `queue-settings:${queue}`, log },
      ),
    // Rewrites of one pool at once (two `configure()` calls) end with the permits of the one whose
    // record was written last: each purges only what was stored before it saw its record as the
    // latest (a newer record, and so its permits, came after that look), and one that sees a newer
    // record once it has published takes its own permits back (the newer one may have purged
    // before they came). Before, each purged the subject and published: interleaved, both pools.
    setPermits: (queue, kind, count, rewrite, leaseMs = defaultPermitLeaseMs) => {
      const round = rewrite?.round ?? randomUUID().slice(0, 8);
      const isLatest = rewrite ? () => rewrite.isLatest() : async () => true;
      // This rewrite's permits not purged since, across the operation's attempts, by sequence;
      // and those whose publish failed, by id (stored or not: the answer may be what was lost).
      let published: number[] = [];
      const unknown: PermitMessage[] = [];
      let attempt = 0;
      return broker.run("queue.permits.set", async (nc) => {
        const { js, jsm } = await broker.handles(nc);
        await consumerOf(nc, queue, kind, leaseMs, false);
        const subject = names.permitsSubject(queue, kind);
        // A permit whose publish failed, published again under its id: the server answers with
        // the one it stored (within its two-minute duplicate window), or stores it now; either
        // way its sequence is known, and it is purged or taken back below with the others. Not
        // known, one stored after a newer rewrite's look stayed beside its pool.
        while (unknown.length > 0) {
          const permit = unknown[0] as PermitMessage;
          published.push((await js.publish(subject, permit.body, { msgID: permit.msgID })).seq);
          unknown.shift();
        }
        for (;;) {
          const last = (await jsm.streams.info(names.permitsStream)).state.last_seq;
          if (!(await isLatest())) break;
          // The old pool, held permits included (their nak then names nothing), and an earlier
          // attempt's permits (all stored by now); never a newer rewrite's, all after `last`.
          await jsm.streams.purge(names.permitsStream, { filter: subject, seq: last + 1 });
          published = [];
          // Ids of this attempt: one retried after a timeout is not a second permit, and the next
          // attempt's, which purged these, are not dropped as their duplicates.
          attempt++;
          // A taker that found the pool lost (`seedLostPermits`) publishes the first attempt's
          // ids: one of those stored before `last` was purged just now, and the server, which
          // remembers ids past a purge, stores nothing for ours: the pool was left short, or
          // empty. Then the next attempt's ids, after purging these.
          let twinPurged = false;
          await publishPermits(
            js,
            subject,
            count,
            `${queue}.${kind}.${round}.${attempt}`,
            (seq, duplicate) => {
              if (duplicate && seq <= last) twinPurged = true;
              else published.push(seq);
            },
            (permit) => unknown.push(permit),
          );
          if (twinPurged) continue;
          if (await isLatest()) return;
          break;
        }
        await deleteMessages(jsm, names.permitsStream, published, 500);
        published = [];
      });
    },
    setPermitLease: (queue, leaseMs) =>
      broker.run("queue.permits.lease", async (nc) => {
        for (const kind of ["concurrency", "rate"] as const)
          await pools.setLease(nc, names.permitsStream, permitsConsumer(queue, kind), leaseMs);
      }),
    takePermit: (queue, kind, signal, leaseMs = defaultPermitLeaseMs) =>
      takeFrom(broker, (nc) => consumerOf(nc, queue, kind, leaseMs), signal, leaseMs),
    takeTargetPermit: (queue, pool, kind, signal) =>
      takeFrom(
        broker,
        async (nc) => {
          await filledPool(nc, queue, pool, kind);
          return consumerFor(
            nc,
            names.targetPermitsStream(queue),
            targetPermitsConsumer(pool.target, pool.round, kind),
            names.targetPermitsSubject(queue, pool.target, pool.round, kind),
            pool.leaseMs ?? defaultPermitLeaseMs,
          );
        },
        signal,
        pool.leaseMs ?? defaultPermitLeaseMs,
      ),
    // The old round's permits, markers and consumers; a worker still on it fills its pool again
    // (it sees the new round within a second): that pool is dropped with the next change.
    renewTargetPools: (queue, oldRound) =>
      broker.run("queue.permits.set", async (nc) => {
        const { jsm } = await broker.handles(nc);
        await targetStream(nc, jsm, queue);
        if (oldRound === undefined) return;
        const stream = names.targetPermitsStream(queue);
        await jsm.streams.purge(stream, {
          filter: `${core.options.prefix}.tpermits.${queue}.*.${oldRound}.>`,
        });
        const ours = (name: string) => name.endsWith(`_${oldRound}`);
        for await (const c of jsm.consumers.list(stream)) {
          if (ours(c.name)) await jsm.consumers.delete(stream, c.name).catch(() => undefined);
        }
        pools.forget(nc, stream, ours);
      }),
    // A pull with `no_wait`, as the HTTP leases' (nats/task-leasing.ts): nats.js `fetch()` waits at
    // least 1 s when fewer than `max` are ready. Not retried: a second pull could take twice.
    takeFreePermits: (queue, kind, max, leaseMs = defaultPermitLeaseMs) =>
      broker.run(
        "queue.permit.take",
        async (nc) => {
          const made = await consumerOf(nc, queue, kind, leaseMs);
          const permits = await pullFreePermits(
            nc,
            `$JS.API.CONSUMER.MSG.NEXT.${names.permitsStream}.${permitsConsumer(queue, kind)}`,
            max,
            Math.min(leaseMs, made.leaseMs),
            made.lives,
          );
          await made.pulled(permits.length > 0);
          return permits;
        },
        { retry: { attempts: 1, initialDelayMs: 0 } },
      ),
    noteLease: (queue, note) => publishNote(core.connection, names.leaseNotesSubject(queue), note, log),
    watchLeaseNotes: (queue, onNote, signal) =>
      watchNotes(core.connection, names.leaseNotesSubject(queue), onNote, signal, {
        name: `lease-notes:${queue}`,
        log,
      }),
  };
};
