/**
 * Time as a dependency. Production uses the real clock; `jetstate-jobs/testing`
 * uses a manual one, so leases, stalls and redelivery delays can be tested in
 * milliseconds without sleeping.
 */
export interface Clock {
  now(): number;
  /** A clock no step of the wall clock moves (`performance.now()`); none: `now()` stands for it. */
  monotonic?(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The server's clock as a read saw it: `at` (epoch ms) when `performance.now()` read `seenAt`. */
export interface ServerTime {
  readonly at: number;
  readonly seenAt: number;
  /**
   * How much later than the server's time at `seenAt` `at` may be (the read's
   * round trip: its stamp fell somewhere in it); none: exact.
   */
  readonly roundTripMs?: number;
}

/**
 * How far `clock` is ahead of the server's (negative: behind), by `seen`
 * (the server's clock as a read saw it, carried on by the monotonic clock);
 * 0 with no reading: the clock is taken as the server's.
 */
export const aheadOfServer = (clock: Clock, seen: ServerTime | undefined): number =>
  seen === undefined ? 0 : aheadOfServerAt(clock.now(), seen);

/**
 * How far a clock that read `now` runs ahead of the server's, the server's
 * time read now (from `seen`, carried on by the monotonic clock). `now` read
 * earlier by d makes it d less: a judgment made with it is the one `now`
 * plus d would make now (what it compares with `now` is d earlier too).
 */
export const aheadOfServerAt = (now: number, seen: ServerTime): number =>
  now - (seen.at + (performance.now() - seen.seenAt));

/**
 * `aheadOfServerAt` with the reading's round trip counted in: at most how
 * far the clock runs ahead. A reading's stamp may be later than the
 * server's time at `seenAt` by its round trip, which reads the clock as
 * less ahead by as much; a time another host stamped then reads that much
 * early here (a live lease run out, a stall older than it is). Counted in,
 * such a time reads late by up to the round trip, never early.
 */
export const aheadOfServerAtMost = (now: number, seen: ServerTime): number =>
  aheadOfServerAt(now, seen) + (seen.roundTripMs ?? 0);

/** `aheadOfServer`, undefined with no reading: a judge that must not take its clock for the server's. */
export const aheadOfServerRead = (clock: Clock, seen: ServerTime | undefined): number | undefined =>
  seen === undefined ? undefined : aheadOfServer(clock, seen);

/** `clock.monotonic()`, or `clock.now()` for a clock without one. */
export const monotonicNow = (clock: Clock): number => clock.monotonic?.() ?? clock.now();

/**
 * Elapsed time on the wall clock's axis: the wall time when it was made plus
 * the monotonic time since (whole ms). A step of the wall clock (NTP, a VM
 * resumed) does not move it, so a span measured on it is time that went by.
 * One per runtime (a job's times are compared with one another's).
 */
export interface SteadyClock {
  now(): number;
  /**
   * How far the wall clock reads ahead of `now()` (what it was stepped by
   * since): a wall-clock stamp `t` is `t - wallAhead()` on this clock.
   */
  wallAhead(): number;
}

/** `clock` made steady; the clock itself for a clock without a monotonic one (a manual clock). */
export const steadyClock = (clock: Clock): SteadyClock => {
  const wallAt = clock.now();
  const monotonicAt = monotonicNow(clock);
  const now = () => wallAt + Math.round(monotonicNow(clock) - monotonicAt);
  return { now, wallAhead: () => clock.now() - now() };
};

export const realClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** A clock that moves only when told to: `advance(ms)` fires every timer due on the way. */
export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();

  constructor(start = 1_700_000_000_000) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  /** Moves time forward, firing due timers in order (each sees `now()` at its due time). */
  advance(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.#timers)
        if (entry[1].at <= end && (!next || entry[1].at < next[1].at)) next = entry;
      if (!next) break;
      this.#timers.delete(next[0]);
      this.#now = Math.max(this.#now, next[1].at);
      next[1].fn();
    }
    this.#now = end;
  }

  /** Timers waiting to fire. */
  get pending(): number {
    return this.#timers.size;
  }
}

/** Calls `fn` every `ms` on `clock` until the returned function is called. */
const every = (clock: Clock, ms: number, fn: () => void): (() => void) => {
  let handle: unknown;
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    handle = clock.setTimeout(tick, ms);
    fn();
  };
  handle = clock.setTimeout(tick, ms);
  return () => {
    stopped = true;
    clock.clearTimeout(handle);
  };
};

/**
 * `every` as a loop with an end: calls `step` every `ms` on `clock`, skipping
 * ticks while the last step is still running, until `signal` aborts; resolves
 * once that step has settled too (a loop of the runtime's `LoopGroup` then
 * holds `rt.stop()` until it has). `step` returns undefined when it has nothing
 * to do; a step that rejects ends the loop with its error.
 */
export const everyUntil = (
  clock: Clock,
  ms: number,
  step: () => Promise<void> | undefined,
  signal: AbortSignal,
): Promise<void> =>
  new Promise<void>((resolve, reject) => {
    let running: Promise<void> | undefined;
    const end = (error?: unknown) => {
      stop();
      signal.removeEventListener("abort", onAbort);
      if (error === undefined) resolve();
      else reject(error);
    };
    const stop = every(clock, ms, () => {
      if (running || signal.aborted) return;
      const started = step();
      if (!started) return;
      running = started.then(
        () => {
          running = undefined;
          if (signal.aborted) end();
        },
        (error: unknown) => end(error ?? new Error("loop step failed")),
      );
    });
    const onAbort = () => {
      stop(); // no tick after the abort; the step in flight ends the loop once it settles
      if (!running) end();
    };
    if (signal.aborted) end();
    else signal.addEventListener("abort", onAbort, { once: true });
  });

/**
 * The longest one timer of `pause` waits: Node's own longest is 24.8 days (a
 * longer one fires at once), and a timer runs on the monotonic clock, which a
 * suspended machine or a step of the wall clock leaves behind `now()`.
 */
const pauseStepMs = 60_000;

/**
 * Resolves once `ms` have passed on `clock` (true), or at once when `signal`
 * aborts (false). A long wait is several timers of a minute at most, each
 * checking `clock.now()` again.
 */
export const pause = (clock: Clock, ms: number, signal: AbortSignal): Promise<boolean> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const until = clock.now() + ms;
    let timer: unknown;
    const aborted = () => {
      clock.clearTimeout(timer);
      resolve(false);
    };
    const wait = () => {
      const left = until - clock.now();
      if (left <= 0) {
        signal.removeEventListener("abort", aborted);
        return resolve(true);
      }
      timer = clock.setTimeout(wait, Math.min(left, pauseStepMs));
    };
    signal.addEventListener("abort", aborted, { once: true });
    wait();
  });
