import { AckPolicy, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../../kernel/logger.ts";
import { ConsumerLives } from "./consumer-lives.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import type { PoolConsumer } from "./permit-pulls.ts";
import type { SeedOutcome } from "./permit-seeds.ts";
import { isNotFound, nanos } from "./streams.ts";

/** A consumer's ack wait when its config says none: the server's default. */
const serverAckWaitMs = 30_000;

/** How often a pool's consumer whose lease is shorter than its taker's settings say is looked up again. */
const shortLeaseLookMs = 10_000;

/**
 * How long a pool's pulls on a client give no permit before its subject is
 * counted again (`refill`), and how often at most while they still give none.
 */
const emptyPoolLookMs = 5_000;

/** A pull's failure that says its consumer was deleted (a 409 status, "consumer deleted"). */
const isConsumerDeleted = (error: unknown): boolean => {
  const status = error as { code?: unknown; description?: unknown; message?: unknown } | undefined;
  return status?.code === 409 && /consumer deleted/i.test(String(status.description ?? status.message ?? ""));
};

/** A pool's consumer as a client looked it up: for a taker asking `askedMs`, at `at`. */
interface CachedConsumer {
  readonly askedMs: number;
  readonly at: number;
  readonly pool: Promise<PoolConsumer>;
}

/**
 * The consumers of the queues' permit pools, each with its permits' lease
 * there (its ack wait), as each client of the broker looked them up.
 * `ready` readies a pool's stream before its consumer is made.
 *
 * A look-up a pull failed on is forgotten (`PoolConsumer.pullFailed`): the
 * next take looks the consumer up again, and the server's "consumer not
 * found" makes it again, with the lease asked. Kept, a consumer deleted by
 * hand (`nats consumer rm`) stopped its queue's work for good: every pull on
 * it missed its heartbeats, and nothing looked it up again.
 *
 * The consumer made again hands out every permit, the held ones too; the
 * server matches a holder's answer by stream sequence on the consumer's
 * name, so an old holder's nak freed the permit of its new holder: each
 * permit kept two holders for as long as the queue had a backlog. Each
 * client follows the consumer's lives (`ConsumerLives`): over when a pull
 * hears it deleted, a look-up makes it, a look-up finds it created at
 * another time having made fewer deliveries than this client saw, or a
 * permit comes with a delivery sequence not above the last seen; the
 * permits held from a life that is over are not answered (kept nor given
 * back): their holders run to the end and drop them.
 *
 * A pool is seeded (`refill`) by the look-up that made its consumer, and
 * again by a take whose pulls on this client have given no permit for
 * `emptyPoolLookMs` (at most once per pool and client in that time; at
 * once after a seed of this client failed): a seed that did not get
 * through (a request lost, the runtime stopped after the consumer was
 * made) left the pool empty for good, as every later look-up found the
 * consumer. A pool whose permits are all held is counted and left.
 */
export const poolConsumers = (
  broker: Pick<NatsJobBroker, "handles" | "setups">,
  ready: (nc: NatsConnection, jsm: JetStreamManager, stream: string) => Promise<void>,
  log: Logger,
) => {
  const consumers = broker.setups.cache<Map<string, CachedConsumer>>();
  /** Per client, the lives of each pool's consumer, kept across look-ups (a held permit outlives one). */
  const livesCache = new WeakMap<NatsConnection, Map<string, ConsumerLives>>();
  const livesOf = (nc: NatsConnection, key: string): ConsumerLives => {
    const onClient = livesCache.get(nc) ?? new Map<string, ConsumerLives>();
    const lives = onClient.get(key) ?? new ConsumerLives();
    livesCache.set(nc, onClient.set(key, lives));
    return lives;
  };
  /** Per client, when each pool last gave a permit here or was counted (`refill`): -Infinity when its seed failed. */
  const quietCache = new WeakMap<NatsConnection, Map<string, number>>();
  const quietOn = (nc: NatsConnection): Map<string, number> => {
    const onClient = quietCache.get(nc) ?? new Map<string, number>();
    quietCache.set(nc, onClient);
    return onClient;
  };
  /** The pools whose consumer this runtime found or made: one not found again was removed. */
  const seen = new Set<string>();
  const knownOn = (nc: NatsConnection): Map<string, CachedConsumer> => {
    let known = consumers.get(nc);
    if (!known) {
      known = new Map();
      consumers.set(nc, known);
    }
    return known;
  };

  /**
   * A pool's consumer on this client: made when missing (a worker may make
   * its queue's) with `leaseMs`, the lease its taker's settings say. Looked
   * up again when a taker asks with another lease (the settings changed),
   * and, while it is shorter than the lease asked (the settings name a
   * longer one than `configure` has set on the consumer, or a crash came
   * between), every `shortLeaseLookMs`: the taker holds its permit for the
   * shorter one meanwhile. `refill`, when given, is called once the
   * consumer was made here (not found), and when the pool's pulls here give
   * no permit for a while (above): it publishes the pool again when its
   * permits were lost with it (the stream made again empty), and says so.
   */
  const consumerFor = (
    nc: NatsConnection,
    stream: string,
    name: string,
    subject: string,
    leaseMs: number,
    refill?: () => Promise<SeedOutcome>,
  ): Promise<PoolConsumer> => {
    const known = knownOn(nc);
    const key = `${stream}/${name}`;
    const found = known.get(key);
    const lookUp = (): Promise<PoolConsumer> => {
      let entry: CachedConsumer | undefined;
      const forget = () => {
        if (entry && known.get(key) === entry) known.delete(key);
      };
      const made = (async () => {
        const { js, jsm } = await broker.handles(nc);
        await ready(nc, jsm, stream);
        const lives = livesOf(nc, key);
        let ackWait: number | undefined;
        try {
          const info = await jsm.consumers.info(stream, name);
          lives.met(info.created, info.delivered.consumer_seq);
          ackWait = info.config.ack_wait;
        } catch (error) {
          if (!isNotFound(error)) throw error;
          ackWait = (
            await jsm.consumers.add(stream, {
              durable_name: name,
              filter_subject: subject,
              ack_policy: AckPolicy.Explicit,
              ack_wait: nanos(leaseMs),
              max_deliver: -1,
              max_ack_pending: 20_000,
            })
          ).config.ack_wait;
          // Not found: what this client holds of it is of a life that is over.
          lives.gone();
          // Its permits lost too (the stream made again): published again, and said so there.
          const quiet = quietOn(nc);
          quiet.set(key, Number.NEGATIVE_INFINITY);
          const refilled = await refill?.();
          quiet.set(key, Date.now());
          // Once per consumer made again: a look-up that fails is not one.
          if (seen.has(key) && refilled !== "seeded" && refilled !== "topped")
            log.warn(
              { stream, consumer: name },
              `permit pool consumer ${name} on ${stream} was gone (deleted?): made again, ${
                refilled === "kept"
                  ? "its permits kept"
                  : refilled === "none"
                    ? "with no permit (its pool empty, and its queue's record gone or with no limit for it)"
                    : "its permits as they are"
              }`,
            );
        }
        seen.add(key);
        // None said: the server's default.
        const lease = ackWait === undefined ? serverAckWaitMs : Math.floor(ackWait / 1e6);
        const consumer = await js.consumers.get(stream, name);
        const life = lives.caught();
        const pullFailed = (error: unknown) => {
          forget();
          // Heard deleted: ends the life this look-up met, not one a later look-up began.
          if (isConsumerDeleted(error) && lives.caught() === life) lives.gone();
        };
        const pulled = async (some: boolean): Promise<void> => {
          const quiet = quietOn(nc);
          const at = Date.now();
          if (some || !refill) {
            quiet.set(key, at);
            return;
          }
          if (at - (quiet.get(key) ?? at) < emptyPoolLookMs) {
            if (!quiet.has(key)) quiet.set(key, at);
            return;
          }
          quiet.set(key, at);
          await refill().catch((error: unknown) =>
            log.debug(
              { stream, consumer: name, err: error },
              `permit pool ${name} on ${stream}: its count failed`,
            ),
          );
        };
        return { consumer, leaseMs: lease, lives, pullFailed, pulled };
      })();
      entry = { askedMs: leaseMs, at: Date.now(), pool: made };
      known.set(key, entry);
      made.catch(forget);
      return made;
    };
    if (found?.askedMs !== leaseMs) return lookUp();
    const { at, pool } = found;
    return pool.then((c) => (c.leaseMs >= leaseMs || Date.now() - at < shortLeaseLookMs ? c : lookUp()));
  };

  return {
    consumerFor,
    /** Sets the ack wait of a pool's consumer, when it exists, to `leaseMs` (an admin's request). */
    setLease: async (nc: NatsConnection, stream: string, name: string, leaseMs: number): Promise<void> => {
      const { jsm } = await broker.handles(nc);
      const info = await jsm.consumers.info(stream, name).catch((error: unknown) => {
        if (isNotFound(error)) return undefined;
        throw error;
      });
      if (info && info.config.ack_wait !== nanos(leaseMs))
        await jsm.consumers.update(stream, name, { ack_wait: nanos(leaseMs) });
      knownOn(nc).delete(`${stream}/${name}`);
    },
    /** Forgets this client's look-ups of `stream`'s consumers whose name `which` says (removed by this runtime: not reported gone). */
    forget: (nc: NatsConnection, stream: string, which: (name: string) => boolean): void => {
      const known = knownOn(nc);
      for (const key of [...known.keys(), ...seen])
        if (key.startsWith(`${stream}/`) && which(key.slice(stream.length + 1))) {
          known.delete(key);
          seen.delete(key);
        }
    },
  };
};
