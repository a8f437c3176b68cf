/**
 * The ends of the leases this instance timed itself (a reserve's pull, a
 * heartbeat's +WPI), on its monotonic clock, by delivery. A receipt's end
 * is on the server's clock as this instance read it, early by up to the
 * reading's round trip (receipt-clock.ts); the instance that timed the
 * lease knows it without that error: the server's ack wait ran from after
 * the pull (or the +WPI) was sent. So a receipt that comes back here is
 * open until the later of the two: a reading whose answer took 4 s made
 * the leasing instance refuse a heartbeat 6 s into a lease it had told the
 * worker was 9 s. Another instance judges it by its end alone.
 */
export class OwnLeaseEnds {
  readonly #monotonic: () => number;
  readonly #ends = new Map<string, number>();
  /** When the ends run out were last dropped. */
  #sweptAt: number;

  constructor(monotonic: () => number) {
    this.#monotonic = monotonic;
    this.#sweptAt = monotonic();
  }

  /** The delivery's lease runs until `end` (monotonic), by a send of this instance's; never moved back. */
  timed(ref: string, end: number): void {
    this.#sweep();
    this.#ends.set(ref, Math.max(end, this.#ends.get(ref) ?? end));
  }

  /** The delivery's lease end as this instance timed it (monotonic); undefined when it did not, or it ran out. */
  endOf(ref: string): number | undefined {
    const end = this.#ends.get(ref);
    return end !== undefined && end > this.#monotonic() ? end : undefined;
  }

  /** Drops the ends run out, at most once a second: the map holds the leases open here, no more. */
  #sweep(): void {
    const now = this.#monotonic();
    if (now - this.#sweptAt < 1000) return;
    this.#sweptAt = now;
    for (const [ref, end] of this.#ends) if (end <= now) this.#ends.delete(ref);
  }
}
