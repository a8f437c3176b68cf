import type { Consumer, JsMsg } from "@nats-io/jetstream";
import { createInbox, type NatsConnection } from "@nats-io/transport-node";
import type { Permit } from "../queue-controls.ts";
import type { NatsJobBroker } from "./job-broker.ts";

/** How long one pull for a permit waits at the server before the taker asks again (and sees its signal). */
const permitPullMs = 1000;

/** A permit message: nak gives it back (with a delay for the rate pool), working keeps it. */
class JsPermit implements Permit {
  readonly #msg: JsMsg;
  constructor(msg: JsMsg) {
    this.#msg = msg;
  }
  keep(): void {
    this.#msg.working();
  }
  release(delayMs?: number): void {
    // A permit purged by `setPermits` meanwhile: the server ignores the nak.
    this.#msg.nak(delayMs);
  }
}

/** A permit taken by a raw pull (`takeFreePermits`): answered on its reply subject, as a JsMsg is. */
class RawPermit implements Permit {
  readonly #nc: NatsConnection;
  readonly #reply: string;
  constructor(nc: NatsConnection, reply: string) {
    this.#nc = nc;
    this.#reply = reply;
  }
  keep(): void {
    this.#answer("+WPI");
  }
  release(delayMs?: number): void {
    this.#answer(delayMs ? `-NAK ${JSON.stringify({ delay: delayMs * 1_000_000 })}` : "-NAK");
  }
  #answer(payload: string): void {
    // A closed connection: the permit comes back by itself once its lease runs out.
    if (!this.#nc.isClosed()) this.#nc.publish(this.#reply, payload);
  }
}

/** How long a `no_wait` pull waits for its answer when the consumer does not answer at all. */
const freePullTimeoutMs = 2000;

/** Waits for a message of the consumer `made` gives: the permit, or undefined once `signal` aborts. */
export const takeFrom = async (
  broker: Pick<NatsJobBroker, "run">,
  made: (nc: NatsConnection) => Promise<Consumer>,
  signal: AbortSignal,
): Promise<Permit | undefined> => {
  while (!signal.aborted) {
    let msg: JsMsg | null;
    try {
      msg = await broker.run(
        "queue.permit.take",
        async (nc) => (await made(nc)).next({ expires: permitPullMs }),
        { signal },
      );
    } catch (error) {
      if (signal.aborted) return undefined;
      throw error;
    }
    if (msg) {
      if (!signal.aborted) return new JsPermit(msg);
      msg.nak();
    }
  }
  return undefined;
};

/**
 * The permits free now on a pool's consumer, up to `max`, by one pull
 * with `no_wait` on `next` (its `CONSUMER.MSG.NEXT` subject); none when
 * nothing answers within `freePullTimeoutMs`.
 */
export const pullFreePermits = async (nc: NatsConnection, next: string, max: number): Promise<Permit[]> => {
  const inbox = createInbox();
  const sub = nc.subscribe(inbox);
  const timer = setTimeout(() => sub.unsubscribe(), freePullTimeoutMs);
  const permits: Permit[] = [];
  try {
    nc.publish(next, JSON.stringify({ batch: max, no_wait: true }), { reply: inbox });
    for await (const m of sub) {
      // Anything else is a status (404 none free, 408 request done): this pull is over.
      if (!m.reply?.startsWith("$JS.ACK.")) break;
      permits.push(new RawPermit(nc, m.reply));
      if (permits.length >= max) break;
    }
  } finally {
    clearTimeout(timer);
    sub.unsubscribe();
  }
  return permits;
};
