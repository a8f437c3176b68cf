import type { ScheduleStore, StoredSchedule } from "../adapters/schedule-store.ts";
import { aheadOfServer, type Clock } from "../kernel/clock.ts";
import { firstTime } from "../kernel/first-time.ts";
import type { Logger } from "../kernel/logger.ts";

/**
 * Time as a scheduler judges ticks: by the server's clock, not only its own.
 * A runtime whose clock was ahead fired its ticks early and recorded a
 * `lastTick` (or stamped a `since`) in the future, and every other runtime
 * then skipped the real ticks up to it. Two checks, each against the
 * server's stamps (a stored message's time, a consumer's creation):
 *
 * - this runtime's time: its clock, unless that is ahead of the server's by
 *   more than `clockToleranceMs` (as the store last read the server's clock,
 *   carried on by the monotonic clock): then the server's (said at error,
 *   once). A clock behind is left as it is: its ticks fire late here, and on
 *   time in the runtimes whose clocks are right.
 * - a record's times: a `since` or `lastTick` later than the server's stamp
 *   of the entry that carries it, by more than the tolerance, was written by
 *   a clock ahead (a tick is recorded after its job, a rule after it is set):
 *   each is taken as that stamp, the latest time the write bears out (a
 *   `lastTick` taken as absent fired a `runOnce` schedule's latest tick
 *   again once its job's record was cleaned up), said at warn once per value.
 */

/** How far a clock may be ahead of the server's before it is not trusted. */
const clockToleranceMs = 1000;

/** What a scheduler trusts of a stored schedule's times. */
interface TrustedTimes {
  readonly since: number;
  readonly lastTick?: number;
}

export class ScheduleClock {
  readonly #clock: Clock;
  readonly #store: ScheduleStore;
  readonly #log: Logger;
  #aheadTold = false;
  readonly #firstTold = firstTime();

  constructor(clock: Clock, store: ScheduleStore, log: Logger) {
    this.#clock = clock;
    this.#store = store;
    this.#log = log;
  }

  /** Whether the store has a reading of the server's clock now (else this runtime's time is its clock's). */
  read(): boolean {
    return this.#store.serverTime() !== undefined;
  }

  /** How far this runtime's clock is taken back: how far it is ahead of the server's, past the tolerance; else 0. */
  correction(): number {
    const ahead = aheadOfServer(this.#clock, this.#store.serverTime());
    return ahead > clockToleranceMs ? ahead : 0;
  }

  /**
   * How far this runtime's time (`now()`) is ahead of the server's as the
   * store last read it (negative: behind; 0 with no reading): a stamp of
   * the server's plus this is the same moment by `now()`.
   */
  aheadOfServer(): number {
    return aheadOfServer(this.#clock, this.#store.serverTime()) - this.correction();
  }

  /** Says at error that this runtime's clock is ahead, once (again after it came back and went ahead again). */
  tell(): void {
    const ahead = this.correction();
    if (ahead === 0) this.#aheadTold = false;
    else if (!this.#aheadTold) {
      this.#aheadTold = true;
      this.#log.error(
        { aheadMs: Math.round(ahead) },
        "this runtime's clock is ahead of the server's: its schedules' ticks fire by the server's time",
      );
    }
  }

  /** This runtime's time, by the server's clock when its own is ahead. */
  now(): number {
    return this.#clock.now() - this.correction();
  }

  /** The record's `since` and `lastTick` as far as the server's stamp of its entry bears them out. */
  trusted(stored: StoredSchedule): TrustedTimes {
    const { record, storedAt } = stored;
    if (storedAt === undefined) return record;
    const since = this.#judged(record.id, "since", record.since, storedAt);
    // Ahead: the stamp, the latest the write can bear out (its ticks up to then fired). Taken as
    // absent, a `runOnce` schedule fired its latest tick before a new scheduler's start again,
    // its job found by its key no more once cleanup removed its record.
    return record.lastTick === undefined
      ? { since }
      : { since, lastTick: this.#judged(record.id, "lastTick", record.lastTick, storedAt) };
  }

  /** `value`, or the entry's stamp when `value` is ahead of it past the tolerance (said once). */
  #judged(id: string, field: string, value: number, storedAt: number): number {
    const ahead = value - storedAt;
    if (ahead <= clockToleranceMs) return value;
    if (this.#firstTold(`${id}\n${field}\n${value}`))
      this.#log.warn(
        {
          schedule: id,
          [field]: new Date(value).toISOString(),
          storedAt: new Date(storedAt).toISOString(),
          aheadMs: ahead,
        },
        field === "lastTick"
          ? "schedule's lastTick is ahead of the server's time of its write (its writer's clock is ahead): taken as fired up to that time"
          : "schedule's since is ahead of the server's time of its write (its writer's clock is ahead): taken as that time",
      );
    return storedAt;
  }
}
