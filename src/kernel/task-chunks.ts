/**
 * A value per task index kept in chunks of 1,024 indexes, replaced and never
 * mutated: a batch of a job's answers that changes some copies the chunks it
 * changes and the list of them, not every value (a job's dead letters and
 * the letters ahead of their deaths, job-progress.ts).
 */

/** A value per task index, in chunks of `letterChunk` indexes. */
export type ByTask<V> = readonly (ReadonlyMap<number, V> | undefined)[];

const letterChunk = 1024;

/** The value of task `i` in `chunks`. */
export const valueAt = <V>(chunks: ByTask<V> | undefined, i: number): V | undefined =>
  chunks?.[Math.floor(i / letterChunk)]?.get(i);

/** Copies of `from`'s chunks to change, each copied once per batch (`changed` notes which). */
export class ChunkChanges<V> {
  readonly #from: ByTask<V> | undefined;
  #chunks: (ReadonlyMap<number, V> | undefined)[] | undefined;
  readonly #copied = new Set<number>();

  constructor(from: ByTask<V> | undefined) {
    this.#from = from;
  }

  get(i: number): V | undefined {
    return valueAt(this.#chunks ?? this.#from, i);
  }

  set(i: number, value: V | undefined): void {
    const n = Math.floor(i / letterChunk);
    this.#chunks ??= [...(this.#from ?? [])];
    let chunk = this.#chunks[n] as Map<number, V> | undefined;
    if (!this.#copied.has(n)) {
      chunk = new Map(chunk);
      this.#chunks[n] = chunk;
      this.#copied.add(n);
    }
    if (value === undefined) chunk?.delete(i);
    else chunk?.set(i, value);
  }

  /** The values after the batch: `from` itself when it changed none. */
  result(): ByTask<V> | undefined {
    return this.#chunks ?? this.#from;
  }
}
