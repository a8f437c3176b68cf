/**
 * A counting semaphore that grants slots by priority, without starving
 * anyone. Each job's consume loop waits here for a free slot with its next
 * task (one waiter per loop, as a rule; the tasks a loop hands over when
 * they aged in its buffer, and a stopping worker's tasks on their last
 * delivery, wait here too, each on its own), so:
 *
 * - a higher priority is granted first;
 * - among equal priorities the longest-waiting is granted first: a loop that
 *   got its slot waits again behind the others, so jobs of one priority take
 *   turns (round robin), a job with 100k tasks and one with 10 alternate;
 * - **no starvation**: every `oldestEvery`-th contested grant goes to the
 *   longest-waiting waiter whatever its priority. A waiter with `n` waiters
 *   older than it is granted within `(n + 1) × oldestEvery` contested grants;
 *   a priority-0 job alone under a continuous stream of higher-priority work
 *   gets one grant in `oldestEvery`.
 *
 * Grants with no one waiting (a free slot) are not contested and not counted.
 */
export class FairSlots {
  #free: number;
  #closed = false;
  /** Waiters per priority, each list oldest first. */
  readonly #levels = new Map<number, Waiter[]>();
  /** The priorities that have waiters, highest first. */
  readonly #order: number[] = [];
  #waiting = 0;
  #arrivals = 0;
  #contested = 0;

  constructor(size: number) {
    this.#free = size;
  }

  /**
   * Resolves true when the caller holds a slot (to `release()`), a higher
   * `priority` first; false at once after `close()` (no slot held), unless
   * `evenClosed`: a stopping worker's task on its last delivery still waits
   * for a slot, to run within the worker's concurrency.
   */
  acquire(priority = 0, evenClosed = false): Promise<boolean> {
    return this.waitFor(priority, evenClosed).held;
  }

  /**
   * As `acquire`; `cancel()` gives up the wait (`held` then resolves false,
   * no slot held), and does nothing once a slot was granted.
   */
  waitFor(priority = 0, evenClosed = false): { held: Promise<boolean>; cancel: () => void } {
    if (this.#closed && !evenClosed) return { held: Promise.resolve(false), cancel: noop };
    if (this.#free > 0 && this.#waiting === 0) {
      this.#free--;
      return { held: Promise.resolve(true), cancel: noop };
    }
    let waiter: Waiter | undefined;
    const held = new Promise<boolean>((wake) => {
      waiter = { arrival: this.#arrivals++, wake };
      this.#enqueue(priority, waiter);
    });
    return {
      held,
      cancel: () => {
        const level = this.#levels.get(priority);
        const at = waiter && level ? level.indexOf(waiter) : -1;
        if (at < 0 || !level || !waiter) return;
        level.splice(at, 1);
        this.#waiting--;
        if (level.length === 0) {
          this.#levels.delete(priority);
          this.#order.splice(this.#order.indexOf(priority), 1);
        }
        waiter.wake(false);
      },
    };
  }

  /** A slot at once if one is free and nobody waits (true: held, to `release()`); false otherwise. */
  tryAcquire(): boolean {
    if (this.#closed || this.#free === 0 || this.#waiting > 0) return false;
    this.#free--;
    return true;
  }

  release(): void {
    if (this.#waiting === 0) {
      this.#free++;
      return;
    }
    this.#contested++;
    const priority = this.#contested % oldestEvery === 0 ? this.#oldestLevel() : (this.#order[0] as number);
    this.#dequeue(priority).wake(true);
  }

  /** Wakes every waiter with no slot (they see the worker is stopping and hand their task back). */
  close(): void {
    this.#closed = true;
    for (const priority of this.#order.splice(0)) {
      for (const waiter of this.#levels.get(priority) ?? []) waiter.wake(false);
    }
    this.#levels.clear();
    this.#waiting = 0;
  }

  #enqueue(priority: number, waiter: Waiter): void {
    const level = this.#levels.get(priority);
    this.#waiting++;
    if (level) {
      level.push(waiter);
      return;
    }
    this.#levels.set(priority, [waiter]);
    const at = this.#order.findIndex((p) => p < priority);
    this.#order.splice(at < 0 ? this.#order.length : at, 0, priority);
  }

  #dequeue(priority: number): Waiter {
    const level = this.#levels.get(priority) as Waiter[];
    const waiter = level.shift() as Waiter;
    this.#waiting--;
    if (level.length === 0) {
      this.#levels.delete(priority);
      this.#order.splice(this.#order.indexOf(priority), 1);
    }
    return waiter;
  }

  /** The priority whose first waiter came first: each level is oldest first, so only the heads count. */
  #oldestLevel(): number {
    let oldest = this.#order[0] as number;
    let arrival = Number.POSITIVE_INFINITY;
    for (const priority of this.#order) {
      const head = (this.#levels.get(priority) as Waiter[])[0] as Waiter;
      if (head.arrival < arrival) {
        arrival = head.arrival;
        oldest = priority;
      }
    }
    return oldest;
  }
}

const noop = () => {};

interface Waiter {
  readonly arrival: number;
  readonly wake: (held: boolean) => void;
}

/**
 * One contested grant in this many goes to the longest-waiting waiter: the
 * share a low-priority job keeps under higher-priority work (1/8), and the
 * bound on how long any waiter waits.
 */
export const oldestEvery = 8;
