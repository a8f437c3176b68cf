/**
 * A counting semaphore that grants slots first-come, first-served. Each job's
 * consume loop waits here for a free slot with its next task, so a job with
 * 100k tasks and one with 10 alternate instead of the big one starving the
 * small one: round robin falls out of the FIFO.
 */
export class FairSlots {
  #free: number;
  readonly #waiting: Array<() => void> = [];
  #closed = false;

  constructor(size: number) {
    this.#free = size;
  }

  acquire(): Promise<void> {
    if (this.#closed || (this.#free > 0 && this.#waiting.length === 0)) {
      if (!this.#closed) this.#free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }

  /** Wakes every waiter (they see the worker is stopping and hand their task back). */
  close(): void {
    this.#closed = true;
    for (const wake of this.#waiting.splice(0)) wake();
  }
}
