import type { Consumer, JsMsg } from "@nats-io/jetstream";
import { createInbox, type NatsConnection } from "@nats-io/transport-node";
import { defaultPermitLeaseMs } from "../../kernel/queue-settings.ts";
import type { Permit } from "../queue-controls.ts";
import { deliverySeqOf } from "./ack-subjects.ts";
import type { ConsumerLife, ConsumerLives } from "./consumer-lives.ts";
import type { NatsJobBroker } from "./job-broker.ts";

/** How long one pull for a permit waits at the server before the taker asks again (and sees its signal). */
const permitPullMs = 1000;

/** What a permit's lease is known to last past a keep sent: the lease less what the keep takes to arrive. */
const heldFor = (leaseMs: number): number => leaseMs - 1000;

/**
 * A permit's lease as its holder knows it: each keep the server is known to
 * have had before the lease's end (its client's flush came back by then)
 * moves that end on, from when the keep was sent. Past the end with no such
 * keep (the client away, silently or not, or the event loop held) it is
 * lost for good. A lost permit is not given back by a nak: the server hands
 * a lapsed permit to another task, and a nak answers a delivery by its
 * stream sequence alone, so it gave back that task's permit: one task more
 * than the limit ran, and each holder's end down the chain did the same. A
 * lost one comes back by its lease running out.
 */
export class PermitLease {
  readonly #now: () => number;
  readonly #heldForMs: number;
  #until: number;

  constructor(now: () => number = Date.now, leaseMs = defaultPermitLeaseMs) {
    this.#now = now;
    this.#heldForMs = heldFor(leaseMs);
    this.#until = now() + this.#heldForMs;
  }

  /** A keep sent at `sentAt` is known to have reached the server by now. */
  heard(sentAt: number): void {
    if (this.#now() < this.#until) this.#until = Math.max(this.#until, sentAt + this.#heldForMs);
  }

  /** Still this holder's: its give-back may be sent. */
  get held(): boolean {
    return this.#now() < this.#until;
  }
}

/** Sends a keep on `nc` (`send`), and tells the lease once the server has had it. */
const keepOn = (nc: NatsConnection, lease: PermitLease, send: () => void): void => {
  const sentAt = Date.now();
  send();
  // A flush that fails (the client closed) tells nothing: the lease runs out.
  nc.flush().then(
    () => lease.heard(sentAt),
    () => undefined,
  );
};

/**
 * A permit message: nak gives it back (with a delay for the rate pool),
 * working keeps it. One of a life of its pool's consumer that is over (the
 * consumer deleted and made again) is not answered: the server matches an
 * answer by stream sequence on the consumer's name, and the new consumer
 * has handed that permit out again: a nak freed its new holder's permit.
 */
class JsPermit implements Permit {
  readonly #msg: JsMsg;
  readonly #nc: NatsConnection;
  readonly #lease: PermitLease;
  readonly #life: ConsumerLife;
  constructor(msg: JsMsg, nc: NatsConnection, leaseMs: number, life: ConsumerLife) {
    this.#msg = msg;
    this.#nc = nc;
    this.#lease = new PermitLease(Date.now, leaseMs);
    this.#life = life;
  }
  keep(): void {
    if (!this.#life.over) keepOn(this.#nc, this.#lease, () => this.#msg.working());
  }
  release(delayMs?: number): void {
    // A permit purged by `setPermits` meanwhile: the server ignores the nak.
    if (this.#lease.held && !this.#life.over) this.#msg.nak(delayMs);
  }
}

/** A permit taken by a raw pull (`takeFreePermits`): answered on its reply subject, as a JsMsg is. */
class RawPermit implements Permit {
  readonly #nc: NatsConnection;
  readonly #reply: string;
  readonly #lease: PermitLease;
  readonly #life: ConsumerLife;
  constructor(nc: NatsConnection, reply: string, leaseMs: number, life: ConsumerLife) {
    this.#nc = nc;
    this.#reply = reply;
    this.#lease = new PermitLease(Date.now, leaseMs);
    this.#life = life;
  }
  keep(): void {
    if (!this.#life.over) keepOn(this.#nc, this.#lease, () => this.#answer("+WPI"));
  }
  release(delayMs?: number): void {
    if (!this.#lease.held || this.#life.over) return;
    this.#answer(delayMs ? `-NAK ${JSON.stringify({ delay: delayMs * 1_000_000 })}` : "-NAK");
  }
  #answer(payload: string): void {
    // A closed connection: the permit comes back by itself once its lease runs out.
    if (!this.#nc.isClosed()) this.#nc.publish(this.#reply, payload);
  }
}

/** A pool's consumer, with the lease its permits have there (its ack wait). */
export interface PoolConsumer {
  readonly consumer: Consumer;
  readonly leaseMs: number;
  /** The lives of the consumer as this client met them: a permit answers only while its life lasts. */
  readonly lives: ConsumerLives;
  /**
   * A pull on it failed: the look-up is dropped (the next take looks the
   * consumer up again, and makes it when it is gone), and a pull that heard
   * the consumer deleted ends its life.
   */
  readonly pullFailed: (error: unknown) => void;
  /**
   * A pull on it came back (`some`: with a permit): one that gave none for
   * a while counts the pool's subject, and seeds it again when it holds
   * none (`pool-consumers.ts`); otherwise no request.
   */
  readonly pulled: (some: boolean) => Promise<void>;
}

/** How long a `no_wait` pull waits for its answer when the consumer does not answer at all. */
const freePullTimeoutMs = 2000;

/**
 * Waits for a message of the consumer `made` gives: the permit, or undefined
 * once `signal` aborts. Its lease is `leaseMs`, or the consumer's when shorter.
 */
export const takeFrom = async (
  broker: Pick<NatsJobBroker, "run">,
  made: (nc: NatsConnection) => Promise<PoolConsumer>,
  signal: AbortSignal,
  leaseMs: number,
): Promise<Permit | undefined> => {
  while (!signal.aborted) {
    let taken: { msg: JsMsg; nc: NatsConnection; leaseMs: number; life: ConsumerLife } | undefined;
    try {
      taken = await broker.run(
        "queue.permit.take",
        async (nc) => {
          const pool = await made(nc);
          // A pull on a consumer deleted meanwhile misses its heartbeats, or hears "consumer
          // deleted": the look-up is dropped, and the next attempt's finds it gone and makes it.
          const msg = await pool.consumer.next({ expires: permitPullMs }).catch((error: unknown) => {
            pool.pullFailed(error);
            throw error;
          });
          await pool.pulled(msg !== null);
          if (!msg) return undefined;
          const life = pool.lives.of(msg.info.deliverySequence);
          return { msg, nc, leaseMs: Math.min(leaseMs, pool.leaseMs), life };
        },
        { signal },
      );
    } catch (error) {
      if (signal.aborted) return undefined;
      throw error;
    }
    if (taken) {
      const { msg, nc, life } = taken;
      if (!signal.aborted) return new JsPermit(msg, nc, taken.leaseMs, life);
      if (!life.over) msg.nak();
    }
  }
  return undefined;
};

/**
 * The permits free now on a pool's consumer, up to `max`, by one pull
 * with `no_wait` on `next` (its `CONSUMER.MSG.NEXT` subject); none when
 * nothing answers within `freePullTimeoutMs`. Each of the consumer's life
 * `lives` says by its delivery sequence.
 */
export const pullFreePermits = async (
  nc: NatsConnection,
  next: string,
  max: number,
  leaseMs: number,
  lives: ConsumerLives,
): Promise<Permit[]> => {
  const inbox = createInbox();
  const sub = nc.subscribe(inbox);
  const timer = setTimeout(() => sub.unsubscribe(), freePullTimeoutMs);
  const permits: Permit[] = [];
  try {
    nc.publish(next, JSON.stringify({ batch: max, no_wait: true }), { reply: inbox });
    for await (const m of sub) {
      // Anything else is a status (404 none free, 408 request done): this pull is over.
      if (!m.reply?.startsWith("$JS.ACK.")) break;
      permits.push(new RawPermit(nc, m.reply, leaseMs, lives.of(deliverySeqOf(m.reply))));
      if (permits.length >= max) break;
    }
  } finally {
    clearTimeout(timer);
    sub.unsubscribe();
  }
  return permits;
};
