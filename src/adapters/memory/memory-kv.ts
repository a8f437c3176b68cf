import { PermanentBrokerError, RevisionConflict } from "../../kernel/errors.ts";

/** One key's latest entry; `value` undefined: deleted or purged (a marker with its own revision, as in NATS KV). */
export interface KvEntry {
  readonly key: string;
  readonly value: string | undefined;
  readonly revision: number;
  /** When it was written, by the server's clock (a bucket made with one). */
  readonly storedAt?: number;
}

// What nats.js accepts as a KV key (`validateKey`): anything else fails before the server sees it.
const validKey = /^[-/=.\w]+$/;

/**
 * A KV bucket with NATS KV's compare-and-set rules (history 1): revisions come
 * from one counter per bucket; `create` fails on a live key but not on a
 * deleted one; `update` and `delete` fail unless the revision is the key's
 * latest (a delete marker counts); a deleted key is gone for `get` users that
 * look at `value`, exactly like an entry with `operation: "DEL"`.
 */
export class MemoryKv {
  readonly #entries = new Map<string, KvEntry>();
  readonly #watchers = new Set<(entry: KvEntry) => void>();
  /** How a conflict names the key, e.g. `job record <id>`. */
  readonly #describe: (key: string) => string;
  #revision = 0;
  /** The server's clock, which stamps each write (as NATS stamps a stored message); none: no stamps. */
  readonly #now: (() => number) | undefined;

  constructor(describe: (key: string) => string, now?: () => number) {
    this.#describe = describe;
    this.#now = now;
  }

  /** The server's time now; undefined for a bucket made without a clock. */
  time(): number | undefined {
    return this.#now?.();
  }

  get(operation: string, key: string): KvEntry | undefined {
    this.#check(operation, key);
    return this.#entries.get(key);
  }

  create(operation: string, key: string, value: string): number {
    this.#check(operation, key);
    if (this.#entries.get(key)?.value !== undefined) this.#conflict(key);
    return this.#write(key, value);
  }

  /** Writes whatever is there (NATS KV's `put`). */
  put(operation: string, key: string, value: string): number {
    this.#check(operation, key);
    return this.#write(key, value);
  }

  update(operation: string, key: string, value: string, revision: number): number {
    this.#check(operation, key);
    if (!(revision > 0)) {
      // nats.js refuses it before sending: a permanent error, like every bad request.
      throw new PermanentBrokerError({ message: `${operation}: version must be greater than 0`, operation });
    }
    if ((this.#entries.get(key)?.revision ?? 0) !== revision) this.#conflict(key);
    return this.#write(key, value);
  }

  delete(operation: string, key: string, previousRevision?: number): void {
    this.#check(operation, key);
    if (previousRevision !== undefined && (this.#entries.get(key)?.revision ?? 0) !== previousRevision) {
      this.#conflict(key);
    }
    this.#write(key, undefined);
  }

  /** Removes the value whatever its revision (a marker stays, as NATS KV leaves a PURGE entry). */
  purge(operation: string, key: string): void {
    this.#check(operation, key);
    this.#write(key, undefined);
  }

  /**
   * Removes the key's entry, marker and all, as a purge of its subject on the
   * bucket's stream does (`upTo`: only if its revision is not later). No
   * watcher hears of it: the stream's purge sends nothing either.
   */
  erase(operation: string, key: string, upTo?: number): void {
    this.#check(operation, key);
    const entry = this.#entries.get(key);
    if (entry && (upTo === undefined || entry.revision <= upTo)) this.#entries.delete(key);
  }

  /** Live entries, in key creation order. */
  live(): KvEntry[] {
    return [...this.#entries.values()].filter((e) => e.value !== undefined);
  }

  /**
   * Every key's latest entry written after `revision` (markers included), in
   * the order written: NATS KV's stream of history 1 read from a sequence on.
   */
  writtenAfter(revision: number): KvEntry[] {
    return [...this.#entries.values()]
      .filter((e) => e.revision > revision)
      .sort((a, b) => a.revision - b.revision);
  }

  /** Calls `listener` with every write from now on (markers included); returns the unsubscribe. */
  watch(listener: (entry: KvEntry) => void): () => void {
    this.#watchers.add(listener);
    return () => this.#watchers.delete(listener);
  }

  #write(key: string, value: string | undefined): number {
    const storedAt = this.#now?.();
    const entry: KvEntry = {
      key,
      value,
      revision: ++this.#revision,
      ...(storedAt === undefined ? {} : { storedAt }),
    };
    this.#entries.set(key, entry);
    for (const watcher of [...this.#watchers]) watcher(entry);
    return entry.revision;
  }

  #check(operation: string, key: string): void {
    if (typeof key !== "string" || key.startsWith(".") || key.endsWith(".") || !validKey.test(key)) {
      throw new PermanentBrokerError({ message: `${operation}: invalid key: ${String(key)}`, operation });
    }
  }

  #conflict(key: string): never {
    throw new RevisionConflict({ message: `${this.#describe(key)} changed concurrently`, key });
  }
}
