/**
 * The leases each token holds through this API instance, so one token cannot
 * hoard a job's tasks: at most `max` open leases (reserved, not answered,
 * not expired) per token identity. Slots are taken before the broker is
 * asked, so concurrent reservations of one token cannot pass the cap
 * together. Kept per instance: behind several instances a token can hold up
 * to `max` at each. A lease answered through another instance is seen when
 * the token reaches its cap here (`refresh`: the broker's recorded answers,
 * read at most once a second per token). The leases of a job that is over
 * are dropped at once (`endJob`), whoever holds them. A heartbeat through
 * another instance moves the lease's end here too: that instance tells the
 * others (a lease note, `noted`), so a lease kept open elsewhere keeps its
 * slot here, where it was made.
 */
export class LeaseBook {
  readonly #max: number;
  /** Per identity: each open lease's reference, with its job, its queue and its lease end. */
  readonly #held = new Map<
    string,
    Map<string, { readonly jobId: string; readonly queue: string; until: number }>
  >();
  /** Each open lease's identity, by reference (a note names only the lease). */
  readonly #byRef = new Map<string, string>();
  /** Per job: its open leases' references, with the identity holding each. */
  readonly #ofJob = new Map<string, Map<string, string>>();
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
  fill(
    identity: string,
    granted: number,
    leases: readonly { ref: string; jobId: string; queue: string; until: number }[],
  ): void {
    const left = (this.#taking.get(identity) ?? 0) - granted;
    if (left > 0) this.#taking.set(identity, left);
    else this.#taking.delete(identity);
    if (leases.length === 0) return;
    let mine = this.#held.get(identity);
    if (!mine) {
      mine = new Map();
      this.#held.set(identity, mine);
    }
    for (const l of leases) {
      mine.set(l.ref, { jobId: l.jobId, queue: l.queue, until: l.until });
      this.#byRef.set(l.ref, identity);
      const ofJob = this.#ofJob.get(l.jobId) ?? new Map<string, string>();
      this.#ofJob.set(l.jobId, ofJob.set(l.ref, identity));
    }
  }

  /** A heartbeat here moved the lease's end; false when the lease was not made here. */
  extend(identity: string, ref: string, until: number): boolean {
    const lease = this.#held.get(identity)?.get(ref);
    if (lease) lease.until = until;
    return lease !== undefined;
  }

  /** Another instance moved the lease's end (a heartbeat there), or ended it; never back: notes come in any order. */
  noted(ref: string, until: number | "ended"): void {
    const identity = this.#byRef.get(ref);
    if (identity === undefined) return;
    const lease = this.#held.get(identity)?.get(ref);
    if (until === "ended") this.release(identity, ref);
    else if (lease) lease.until = Math.max(lease.until, until);
  }

  /** The queues of the leases open at `now`: their notes are heard. */
  queues(now: number): Set<string> {
    const queues = new Set<string>();
    for (const mine of this.#held.values())
      for (const { queue, until } of mine.values()) if (until > now) queues.add(queue);
    return queues;
  }

  /** The lease was answered (or refused for good). */
  release(identity: string, ref: string): void {
    const mine = this.#held.get(identity);
    const lease = mine?.get(ref);
    if (!mine || !lease) return;
    mine.delete(ref);
    this.#byRef.delete(ref);
    if (mine.size === 0) this.#held.delete(identity);
    const ofJob = this.#ofJob.get(lease.jobId);
    ofJob?.delete(ref);
    if (ofJob?.size === 0) this.#ofJob.delete(lease.jobId);
  }

  /** The jobs of the open leases (and of some whose end passed, not dropped yet). */
  jobs(): IterableIterator<string> {
    return this.#ofJob.keys();
  }

  /** The job is over: its leases are dropped, whoever holds them; their references. */
  endJob(jobId: string): string[] {
    const refs = [...(this.#ofJob.get(jobId) ?? [])];
    for (const [ref, identity] of refs) this.release(identity, ref);
    return refs.map(([ref]) => ref);
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
    for (const [ref, { until }] of mine) if (until <= now) this.release(identity, ref);
    return mine.size;
  }
}
