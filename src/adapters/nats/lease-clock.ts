import type { NatsConnection } from "@nats-io/transport-node";
import { aheadOfServerAtMost, type ServerTime } from "../../kernel/clock.ts";
import { type LeaseValue, leaseUntilFor } from "../held-leases.ts";
import { ServerClockReading } from "./bucket-reads.ts";

/** How long a reading slower than asked for is kept (`serverTime`). */
const slowReadingKeptMs = 1000;

/**
 * The server's clock as one runtime's leases read it (`NatsJobLeases`): the
 * reading a listing's scan takes (`take`), or one read on demand (`readOnce`:
 * a consumer's creation stamp, shared by every caller while it is in
 * flight: 40 submits waiting at once made 40 consumers), and what another
 * runtime's lease or heartbeat says by it (`untilFor`).
 */
export class LeaseClock {
  readonly #reading = new ServerClockReading();
  readonly #read: (nc: NatsConnection) => Promise<ServerTime>;
  readonly #current: () => NatsConnection | undefined;
  /** The server's INFO of the connection the reading was taken on (`take`). */
  #takenOn: unknown;
  /** A read in flight (`readOnce`). */
  #inFlight: Promise<void> | undefined;

  /**
   * `read`: reads the server's clock now on this client. `current`: the
   * client if connected (a reading is dropped once it reconnected).
   */
  constructor(read: (nc: NatsConnection) => Promise<ServerTime>, current: () => NatsConnection | undefined) {
    this.#read = read;
    this.#current = current;
  }

  /** Takes a scan's reading. */
  readonly take = (seen: ServerTime): void => {
    this.#reading.take(seen);
    this.#takenOn = this.#current()?.info;
  };

  /**
   * Whether the client reconnected since the reading (nats.js parses a new
   * INFO at each connect): maybe to another node of a cluster, or to a
   * server restarted on a host whose clock stepped, whose clock the reading
   * is not of. Read again, the readings of one instance follow the node it
   * is on; the nodes' clocks must agree all the same (docs/architecture.md).
   */
  #reconnected(): boolean {
    const info = this.#current()?.info;
    return info !== undefined && info !== this.#takenOn;
  }

  /**
   * The reading, while it holds. With `maxRoundTripMs`, none either once a
   * reading whose round trip was longer is over a second old: what is
   * timed by it errs by its round trip (a receipt's end, receipt-clock.ts),
   * so such a reading is read again, at most once a second, not kept for
   * its 5 minutes.
   */
  serverTime(maxRoundTripMs?: number): ServerTime | undefined {
    const seen = this.#reconnected() ? undefined : this.#reading.serverTime();
    const slow =
      seen !== undefined &&
      maxRoundTripMs !== undefined &&
      (seen.roundTripMs ?? 0) > maxRoundTripMs &&
      performance.now() - seen.seenAt > slowReadingKeptMs;
    return slow ? undefined : seen;
  }

  /** Reads the server's clock now, shared by every caller while it is in flight (each sees its failure). */
  readOnce(nc: NatsConnection): Promise<void> {
    this.#inFlight ??= this.#read(nc)
      .then(this.take)
      .finally(() => {
        this.#inFlight = undefined;
      });
    return this.#inFlight;
  }

  /**
   * How far the clock `now` was read from (the runtime's) runs ahead of the
   * server's, at most (`aheadOfServerAtMost`: another's lease read as run
   * out late by up to the reading's round trip, never early); undefined
   * without a reading.
   */
  aheadMs(now: number): number | undefined {
    const seen = this.serverTime();
    return seen === undefined ? undefined : aheadOfServerAtMost(now, seen);
  }

  /** A stored lease's or heartbeat's `until` on the clock `now` was read from (`leaseUntilFor`). */
  untilFor(value: LeaseValue, stored: Date, now: number): number {
    return leaseUntilFor(value, stored.getTime(), this.aheadMs(now));
  }
}
