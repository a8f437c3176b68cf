import type { ScheduleStore, StoredSchedule } from "../adapters/schedule-store.ts";
import type { Clock } from "../kernel/clock.ts";
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
 *   such a `lastTick` is no cursor (taken as absent: its ticks fire again,
 *   each its one job by its key), such a `since` is taken as the stamp
 *   (each said at warn, once per value).
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

  /** How far this runtime's clock is taken back: how far it is ahead of the server's, past the tolerance; else 0. */
  correction(): number {
    const seen = this.#store.serverTime();
    if (seen === undefined) return 0;
    const ahead = this.#clock.now() - (seen.at + (performance.now() - seen.seenAt));
    return ahead > clockToleranceMs ? ahead : 0;
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
    const lastTick =
      record.lastTick === undefined
        ? undefined
        : this.#judged(record.id, "lastTick", record.lastTick, storedAt);
    return lastTick === undefined ? { since: since ?? storedAt } : { since: since ?? storedAt, lastTick };
  }

  /** `value`, or undefined when it is ahead of the entry's stamp past the tolerance (said once). */
  #judged(id: string, field: string, value: number, storedAt: number): number | undefined {
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
          ? "schedule's lastTick is ahead of the server's time of its write (its writer's clock is ahead): not taken as fired"
          : "schedule's since is ahead of the server's time of its write (its writer's clock is ahead): taken as that time",
      );
    return undefined;
  }
}
