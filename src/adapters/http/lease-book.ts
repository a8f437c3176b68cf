/**
 * The leases each token holds through this API instance, so one token cannot
 * hoard a job's tasks: at most `max` open leases (reserved, not answered,
 * not expired) per token identity. Slots are taken before the broker is
 * asked, so concurrent reservations of one token cannot pass the cap
 * together. Kept per instance: behind several instances a token can hold up
 * to `max` at each. A lease answered through another instance is seen when
 * the token reaches its cap here (`refresh`: the broker's recorded answers,
 * read at most once a second per token).
 */
export class LeaseBook {
  readonly #max: number;
  /** Per identity: each open lease's reference and lease end. */
  readonly #held = new Map<string, Map<string, number>>();
  /** Per identity: slots taken by reservations in progress. */
  readonly #taking = new Map<string, number>();
  /** Per identity: when its leases were last checked against the broker. */
  readonly #refreshedAt = new Map<string, number>();

  constructor(max: number) {
    this.#max = max;
  }

  get max(): number {
    return this.#max;
  }

  /** Takes up to `want` slots for `identity`; how many it got (0: the token is at its cap). */
  take(identity: string, want: number, now: number): number {
    const held = this.#prune(identity, now);
    const taking = this.#taking.get(identity) ?? 0;
    const granted = Math.max(0, Math.min(want, this.#max - held - taking));
    if (granted > 0) this.#taking.set(identity, taking + granted);
    return granted;
  }

  /** Ends a `take`: the slots it got become the leases actually made. */
  fill(identity: string, granted: number, leases: readonly { ref: string; until: number }[]): void {
    const left = (this.#taking.get(identity) ?? 0) - granted;
    if (left > 0) this.#taking.set(identity, left);
    else this.#taking.delete(identity);
    if (leases.length === 0) return;
    let mine = this.#held.get(identity);
    if (!mine) {
      mine = new Map();
      this.#held.set(identity, mine);
    }
    for (const l of leases) mine.set(l.ref, l.until);
  }

  /** A heartbeat moved the lease's end. */
  extend(identity: string, ref: string, until: number): void {
    const mine = this.#held.get(identity);
    if (mine?.has(ref)) mine.set(ref, until);
  }

  /** The lease was answered (or refused for good). */
  release(identity: string, ref: string): void {
    const mine = this.#held.get(identity);
    if (!mine) return;
    mine.delete(ref);
    if (mine.size === 0) this.#held.delete(identity);
  }

  /**
   * Drops the token's leases that were answered elsewhere (`isAnswered`
   * asks the broker); at most once a second per token, so a token hammering
   * its cap does not turn each request into `max` broker reads.
   */
  async refresh(identity: string, isAnswered: (ref: string) => Promise<boolean>, now: number): Promise<void> {
    const mine = this.#held.get(identity);
    if (!mine || now - (this.#refreshedAt.get(identity) ?? 0) < 1000) return;
    this.#refreshedAt.set(identity, now);
    const refs = [...mine.keys()];
    // Unknown (no answer from NATS) counts as not answered: the lease stays, the next refresh asks again.
    const answered = await Promise.all(refs.map((ref) => isAnswered(ref).catch(() => false)));
    refs.forEach((ref, n) => {
      if (answered[n]) this.release(identity, ref);
    });
    if (!this.#held.has(identity)) this.#refreshedAt.delete(identity);
  }

  #prune(identity: string, now: number): number {
    const mine = this.#held.get(identity);
    if (!mine) return 0;
    for (const [ref, until] of mine) if (until <= now) mine.delete(ref);
    if (mine.size === 0) this.#held.delete(identity);
    return mine.size;
  }
}
