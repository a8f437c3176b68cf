/** What became of a leased task once its holder answered. */
export type SettledStatus = "done" | "failed" | "dead" | "retry";

interface Entry {
  /** Forget the delivery after this (ms since the epoch). */
  readonly until: number;
  /** Resolves with the outcome, or undefined if settling failed (the lease is open again). */
  readonly status: Promise<SettledStatus | undefined>;
}

export type Claim =
  | {
      readonly fresh: true;
      settle(status: SettledStatus): void;
      /** Settling failed: the holder may try again. */
      release(): void;
    }
  | { readonly fresh: false; readonly status: Promise<SettledStatus | undefined> };

/**
 * Deliveries already answered through this API, by reply subject (unique per
 * delivery), kept until a while after their lease ends. A receipt posted
 * twice — a worker retrying a POST whose answer it lost, or two POSTs racing
 * — is settled once and the second gets the first one's outcome, instead of
 * a second ack that might reach the task's next holder.
 */
export class SettledLeases {
  readonly #entries = new Map<string, Entry>();
  readonly #maxEntries: number;
  #prunedAt = 0;

  constructor(maxEntries = 200_000) {
    this.#maxEntries = maxEntries;
  }

  /** Claims the delivery for settling, or tells how (or whether) it was settled already. */
  claim(reply: string, until: number, now: number): Claim {
    this.#prune(now);
    const existing = this.#entries.get(reply);
    if (existing) return { fresh: false, status: existing.status };
    let resolve!: (status: SettledStatus | undefined) => void;
    const status = new Promise<SettledStatus | undefined>((r) => {
      resolve = r;
    });
    const entry: Entry = { until, status };
    this.#entries.set(reply, entry);
    return {
      fresh: true,
      settle: (s) => resolve(s),
      release: () => {
        if (this.#entries.get(reply) === entry) this.#entries.delete(reply);
        resolve(undefined);
      },
    };
  }

  /** True while the delivery is being settled or was settled. */
  has(reply: string): boolean {
    return this.#entries.has(reply);
  }

  get size(): number {
    return this.#entries.size;
  }

  #prune(now: number): void {
    if (this.#entries.size >= this.#maxEntries) {
      // Oldest claims first (a Map keeps insertion order): the likeliest to be past their lease.
      const drop = this.#entries.size - this.#maxEntries + 1;
      let n = 0;
      for (const key of this.#entries.keys()) {
        if (n++ >= drop) break;
        this.#entries.delete(key);
      }
    }
    if (now - this.#prunedAt < 1000) return;
    this.#prunedAt = now;
    for (const [key, entry] of this.#entries) if (entry.until <= now) this.#entries.delete(key);
  }
}
