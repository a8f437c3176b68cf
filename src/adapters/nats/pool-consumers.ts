import { AckPolicy, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../../kernel/logger.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import type { PoolConsumer } from "./permit-pulls.ts";
import { isNotFound, nanos } from "./streams.ts";

/** A consumer's ack wait when its config says none: the server's default. */
const serverAckWaitMs = 30_000;

/** How often a pool's consumer whose lease is shorter than its taker's settings say is looked up again. */
const shortLeaseLookMs = 10_000;

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
 * A look-up a pull failed on is forgotten (`PoolConsumer.forget`): the next
 * take looks the consumer up again, and the server's "consumer not found"
 * makes it again, with the lease asked. Kept, a consumer deleted by hand
 * (`nats consumer rm`) stopped its queue's work for good: every pull on it
 * missed its heartbeats, and nothing looked it up again.
 */
export const poolConsumers = (
  broker: Pick<NatsJobBroker, "handles" | "setups">,
  ready: (nc: NatsConnection, jsm: JetStreamManager, stream: string) => Promise<void>,
  log: Logger,
) => {
  const consumers = broker.setups.cache<Map<string, CachedConsumer>>();
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
   * shorter one meanwhile.
   */
  const consumerFor = (
    nc: NatsConnection,
    stream: string,
    name: string,
    subject: string,
    leaseMs: number,
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
        let ackWait: number | undefined;
        try {
          ackWait = (await jsm.consumers.info(stream, name)).config.ack_wait;
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
          // Once per consumer made again: a look-up that fails is not one.
          if (seen.has(key))
            log.warn(
              { stream, consumer: name },
              `permit pool consumer ${name} on ${stream} was gone (deleted?): made again`,
            );
        }
        seen.add(key);
        // None said: the server's default.
        const lease = ackWait === undefined ? serverAckWaitMs : Math.floor(ackWait / 1e6);
        return { consumer: await js.consumers.get(stream, name), leaseMs: lease, forget };
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
