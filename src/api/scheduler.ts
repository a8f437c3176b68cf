import { Effect } from "effect";
import { initialTransition, type SnapshotFrom, transition } from "xstate";
import type { ScheduleStore, StoredSchedule } from "../adapters/schedule-store.ts";
import { backoffSchedule } from "../effects/retry.ts";
import type { Clock } from "../kernel/clock.ts";
import {
  IdempotencyConflict,
  InvalidArgument,
  isTransient,
  RevisionConflict,
  RoleNotHeld,
  RuntimeStopped,
} from "../kernel/errors.ts";
import { firstTime } from "../kernel/first-time.ts";
import type { Logger } from "../kernel/logger.ts";
import { type ScheduleRecord, tickKey } from "../kernel/schedule-record.ts";
import { type FireAction, type ScheduleEvent, scheduleMachine } from "../machines/schedule.machine.ts";
import { ScheduleClock } from "./schedule-clock.ts";
import { nextTick, ticksBetween } from "./schedule-rule.ts";

/**
 * One runtime's scheduler: one loop and one timer for every schedule. Each
 * pass reads the schedules, fires the ticks that fell due since the last
 * pass, and sleeps until the next tick of any schedule (at most `refreshMs`,
 * so that schedules written elsewhere are seen within it). Every runtime with
 * the submitter role runs one; each fires every tick, and the tick's job is
 * the same job everywhere (its idempotency key names it), so a tick fires
 * once whichever runtimes live, die or lag.
 */

/**
 * What firing a tick does: submit the schedule's job under the tick's key (`rt.jobs.submit`);
 * `now`: the scheduler's time (the server's when this runtime's clock is ahead of it).
 */
type FireTick = (record: ScheduleRecord, tick: number, key: string, now: () => number) => Promise<void>;

export interface SchedulerDeps {
  readonly store: ScheduleStore;
  readonly clock: Clock;
  readonly log: Logger;
  readonly fire: FireTick;
  /** Runs `work` as the runtime's work: `stop()` waits for it. */
  readonly track: (name: string, work: () => Promise<unknown>) => void;
  /** The longest sleep between two passes. @defaultValue 1000 */
  readonly refreshMs?: number;
  /** Submits of one tick's fire before it is given up (and fired again by a later pass). @defaultValue 12 */
  readonly fireAttempts?: number;
  /** The time `rt.schedules` shows by, shared (its warnings said once); one of its own by default. */
  readonly time?: ScheduleClock;
}

/** How many due ticks of one schedule a pass fires at most: a runtime that stalled longer fires the latest. */
const maxCatchUp = 20;
/** Submits of one tick's fire before this runtime gives it up (a later pass fires it again). */
const fireAttempts = 12;

type ScheduleSnapshot = SnapshotFrom<typeof scheduleMachine>;

/** What a scheduler keeps per schedule: the rule it saw, and that schedule's statechart snapshot. */
interface Seen {
  readonly since: number;
  snapshot: ScheduleSnapshot;
  /** Ticks fired again after a transient failure gave them up, and how many times. */
  readonly again: Map<number, number>;
}

/** Rounds of a tick's fire (each of `fireAttempts` submits) after which it is given up for good. */
const fireRounds = 10;

/** Errors no retry mends: the tick is given up here (logged). */
const permanent = (error: unknown): boolean =>
  error instanceof InvalidArgument ||
  error instanceof IdempotencyConflict ||
  error instanceof RoleNotHeld ||
  error instanceof RuntimeStopped;

export class Scheduler {
  readonly #deps: SchedulerDeps;
  /** Time by the server's clock when this runtime's is ahead; a record's times as its stamps bear them out. */
  readonly #time: ScheduleClock;
  readonly #seen = new Map<string, Seen>();
  /** When this scheduler started, by the runtime's clock as it was then. */
  #startedRaw = 0;
  /**
   * When it started by the scheduler's time: taken back by the correction of the first pass
   * that had a reading of the server's clock, then kept (see `#started`).
   */
  #startedAt: number | undefined;
  /** The run's signal: a fire retrying when the runtime stops ends with it. */
  #signal: AbortSignal | undefined;
  #poke: (() => void) | undefined;

  constructor(deps: SchedulerDeps) {
    this.#deps = deps;
    this.#time = deps.time ?? new ScheduleClock(deps.clock, deps.store, deps.log);
  }

  /** Runs passes until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const { clock, log } = this.#deps;
    // By this runtime's clock: the server's may not be read yet (taken back once it is, `#started`).
    this.#startedRaw = clock.now();
    this.#startedAt = undefined;
    this.#signal = signal;
    const refreshMs = this.#deps.refreshMs ?? 1000;
    // The message of the last failure to read them, while reads keep failing alike: one warning
    // per spell (a server with no JetStream fails every read, for good), its repeats at debug.
    let failing: string | undefined;
    while (!signal.aborted) {
      let wake = this.#time.now() + refreshMs;
      try {
        const schedules = await this.#deps.store.list((id, error) => this.#unreadable(id, error));
        failing = undefined;
        wake = Math.min(wake, this.#pass(schedules));
      } catch (error) {
        if (signal.aborted) return;
        const message = error instanceof Error ? error.message : String(error);
        if (message === failing)
          log.debug({ err: error }, "schedules not read again, as before; trying again");
        else log.warn({ err: error }, "schedules not read; trying again");
        failing = message;
      }
      await this.#sleepUntil(wake, signal);
    }
  }

  /** Records this scheduler could not read, each told once (per reason): the others fire on. */
  readonly #firstTold = firstTime();

  #unreadable(id: string, error: unknown): void {
    if (!this.#firstTold(`${id}\n${error instanceof Error ? error.message : String(error)}`)) return;
    this.#deps.log.error({ schedule: id, err: error }, "schedule record unreadable; it does not fire here");
  }

  /** A schedule changed here (upsert, remove): the next pass now, not at the next wake. */
  poke(): void {
    this.#poke?.();
  }

  /**
   * When this scheduler started, by the scheduler's time. Taken back by the correction once, at
   * the first pass with a reading of the server's clock (its first listing), and kept: taken back
   * by the correction of each later moment, a clock set right (NTP stepping it back) while the
   * scheduler ran left it ahead by the step, and a schedule first seen then fired a tick that
   * long early (runOnce) and skipped the real ones up to it.
   */
  #started(): number {
    if (this.#startedAt !== undefined) return this.#startedAt;
    if (!this.#time.read()) return this.#startedRaw;
    this.#startedAt = this.#startedRaw - this.#time.correction();
    return this.#startedAt;
  }

  /** Fires what fell due; returns when the next tick of any schedule falls. */
  #pass(schedules: readonly StoredSchedule[]): number {
    this.#started();
    if (schedules.length > 0) this.#time.tell();
    const now = this.#time.now();
    let wake = Number.POSITIVE_INFINITY;
    const present = new Set<string>();
    for (const stored of schedules) {
      const { record } = stored;
      present.add(record.id);
      try {
        // A `lastTick` or `since` its writer's clock put ahead of the server's is not taken as it is.
        const { since, lastTick } = this.#time.trusted(stored);
        const seen = this.#see(record, since, lastTick);
        if (lastTick !== undefined && lastTick > seen.snapshot.context.cursor)
          this.#send(record, seen, { type: "tick.recorded", lastTick });
        // The ticks that fell due, and those owed (given up on a failure a later attempt may
        // mend): handed out whatever the cursor says. Going back to them by the cursor handed
        // out only the latest `maxCatchUp` ticks after it, so on a short period a tick given
        // up ~40 s on was never fired, and a later tick recorded moved the cursor past it.
        const fresh = ticksBetween(record.rule, seen.snapshot.context.cursor, now, maxCatchUp);
        // The oldest owed first, as many as fresh ones at most: a pass starts at most twice that.
        const owed = seen.snapshot.context.owed.slice(0, maxCatchUp);
        const ticks = owed.length === 0 ? fresh : [...new Set([...owed, ...fresh])].sort((a, b) => a - b);
        if (ticks.length > 0) this.#send(record, seen, { type: "ticks.due", ticks });
        const next = nextTick(record.rule, Math.max(seen.snapshot.context.cursor, now));
        if (next !== undefined) wake = Math.min(wake, next);
      } catch (error) {
        // A rule the store holds but this runtime cannot compute (a cron edited by hand, a time
        // zone this Node does not know): that schedule does not fire here; the others do.
        this.#unreadable(record.id, error);
      }
    }
    // Removed: its ticks stop here (fires in flight end on their own).
    for (const [id, seen] of this.#seen)
      if (!present.has(id)) {
        seen.snapshot = transition(scheduleMachine, seen.snapshot, { type: "schedule.removed" })[0];
        this.#seen.delete(id);
      }
    return wake;
  }

  /** The state of each schedule this scheduler follows now (tests, the model replay). */
  states(): Map<string, ScheduleSnapshot> {
    return new Map([...this.#seen].map(([id, seen]) => [id, seen.snapshot]));
  }

  /**
   * Tests only: each followed schedule's rounds counted per tick fired again after a transient
   * failure (a copy). A tick's count lives while the tick is owed or in flight, no longer.
   */
  rounds(): Map<string, ReadonlyMap<number, number>> {
    return new Map([...this.#seen].map(([id, seen]) => [id, new Map(seen.again)]));
  }

  /** Moves the schedule's statechart and carries out what it says (fire these ticks). */
  #send(record: ScheduleRecord, seen: Seen, event: ScheduleEvent): void {
    const [snapshot, actions] = transition(scheduleMachine, seen.snapshot, event);
    seen.snapshot = snapshot;
    this.#act(record, seen, actions);
  }

  #act(record: ScheduleRecord, seen: Seen, actions: ReadonlyArray<{ readonly type: string }>): void {
    for (const action of actions)
      if (action.type === "fire")
        for (const tick of (action as FireAction).params.ticks) this.#fire(record, seen, tick);
  }

  /**
   * What this runtime keeps of `record`, from its first sight of this rule.
   * Its ticks up to the later of the rule's start and its last fired tick are
   * done; those after that but before this scheduler started fell while it
   * did not run: missed, skipped, or the latest one fired once (`runOnce`).
   */
  #see(record: ScheduleRecord, since: number, lastTick: number | undefined): Seen {
    const known = this.#seen.get(record.id);
    if (known && known.since === record.since) return known;
    // A new rule (or queue) starts anew: the old rule's ticks still owed are not its ticks.
    const dropped = known?.snapshot.context.owed ?? [];
    if (dropped.length > 0)
      this.#deps.log.warn(
        { schedule: record.id, ticks: dropped.map((tick) => new Date(tick).toISOString()) },
        "ticks owed under the schedule's old rule given up: its rule or queue changed",
      );
    const anchor = Math.max(since, lastTick ?? Number.NEGATIVE_INFINITY);
    // Missed: before this scheduler started; a tick in its very first millisecond is due, not missed.
    const started = this.#started() - 1;
    const [missedTick] = ticksBetween(record.rule, anchor, started, 1);
    const [snapshot, actions] = initialTransition(scheduleMachine, {
      missed: record.missed,
      cursor: Math.max(anchor, started),
      ...(missedTick === undefined ? {} : { missedTick }),
    });
    const seen: Seen = { since: record.since, snapshot, again: new Map() };
    this.#seen.set(record.id, seen);
    if (missedTick !== undefined)
      this.#deps.log.info(
        { schedule: record.id, tick: new Date(missedTick).toISOString(), missed: record.missed },
        record.missed === "runOnce" ? "firing the latest missed tick once" : "missed ticks skipped",
      );
    this.#act(record, seen, actions);
    return seen;
  }

  /** Submits the tick's job (retried), then moves the schedule's `lastTick` up to it. */
  #fire(record: ScheduleRecord, seen: Seen, tick: number): void {
    const { log, track } = this.#deps;
    const key = tickKey(record.id, tick);
    log.info({ schedule: record.id, tick: new Date(tick).toISOString(), key }, "firing tick");
    track(`schedule.${record.id}`, async () => {
      // Each try only while this scheduler still follows the rule it read: a schedule removed
      // since (or its rule or queue changed), which its next pass has dropped, fires no more. Its
      // tries went on from the record read, and one submitted the tick's job after `remove()`.
      const unfollowed = new Error("the schedule was removed, or its rule or queue changed");
      const submitted = Effect.suspend(() =>
        this.#seen.get(record.id) === seen
          ? Effect.tryPromise({
              try: () => this.#deps.fire(record, tick, key, () => this.#time.now()),
              catch: (error) => error,
            })
          : Effect.fail(unfollowed),
      ).pipe(
        Effect.retry({
          schedule: backoffSchedule({ initialMs: 200, maxMs: 5000, jitter: true }),
          times: (this.#deps.fireAttempts ?? fireAttempts) - 1,
          while: (error) => error !== unfollowed && !permanent(error),
        }),
      );
      let ok = false;
      /** Given up on a failure a later attempt may mend (the server away): fired again by a later pass. */
      let again: number | undefined;
      try {
        await Effect.runPromise(submitted, this.#signal ? { signal: this.#signal } : undefined);
        await this.#recordTick(record.id, tick);
        ok = true;
        seen.again.delete(tick);
      } catch (error) {
        // Stopping is not giving up: another runtime, or this one started again, fires it.
        if (!(error instanceof RuntimeStopped) && !this.#signal?.aborted) {
          // Only a failure a later try may mend (the server away), and a few rounds at most: one
          // that never can (a queue this user may not publish to) was otherwise fired for good.
          const rounds = (seen.again.get(tick) ?? 0) + 1;
          // A tick of a rule this scheduler no longer follows (its rule or queue changed meanwhile) is owed by none.
          const followed = this.#seen.get(record.id) === seen;
          if (followed && isTransient(error) && rounds < fireRounds) {
            again = tick;
            seen.again.set(tick, rounds);
          } else seen.again.delete(tick);
          log.error(
            { schedule: record.id, key, err: error, rounds },
            again !== undefined
              ? "tick not fired yet; the next pass fires it again"
              : followed
                ? "tick not fired here; given up"
                : "tick of the schedule's old rule not fired; given up: it was removed, or its rule or queue changed",
          );
        }
      } finally {
        // Told to the snapshot of the rule that fired it, if this scheduler still follows it.
        if (this.#seen.get(record.id) === seen) {
          const owedBefore = seen.snapshot.context.owed;
          seen.snapshot = transition(scheduleMachine, seen.snapshot, {
            type: "fire.settled",
            ok,
            ...(again === undefined ? {} : { again }),
          })[0];
          if (again !== undefined) this.#droppedFromOwed(record, seen, [...owedBefore, again]);
        }
      }
    });
  }

  /** Ticks owed past the statechart's cap (its oldest): given up for good, and said so. */
  #droppedFromOwed(record: ScheduleRecord, seen: Seen, owed: readonly number[]): void {
    const kept = new Set(seen.snapshot.context.owed);
    for (const tick of owed) {
      if (kept.has(tick)) continue;
      seen.again.delete(tick);
      this.#deps.log.error(
        { schedule: record.id, key: tickKey(record.id, tick), owed: kept.size },
        "tick not fired here; given up (too many ticks owed)",
      );
    }
  }

  /**
   * `lastTick` moves up to `tick` by compare-and-set, never back (but from one ahead of its
   * entry's stamp, `ScheduleClock`); a lost race is read again.
   */
  async #recordTick(id: string, tick: number): Promise<void> {
    const { store } = this.#deps;
    for (let attempt = 0; attempt < 5; attempt++) {
      const stored = await store.read(id);
      // A `lastTick` its writer's clock put ahead of the server's is replaced: the cursor heals.
      if (!stored || (this.#time.trusted(stored).lastTick ?? Number.NEGATIVE_INFINITY) >= tick) return;
      try {
        await store.update(
          { ...stored.record, lastTick: tick, updatedAt: this.#time.now() },
          stored.revision,
        );
        return;
      } catch (error) {
        if (!(error instanceof RevisionConflict)) throw error;
      }
    }
  }

  #sleepUntil(at: number, signal: AbortSignal): Promise<void> {
    const { clock } = this.#deps;
    return new Promise<void>((resolve) => {
      // Stopped while the pass read the schedules: no timer, or it would be left behind.
      if (signal.aborted) return resolve();
      const done = () => {
        clock.clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.#poke = undefined;
        resolve();
      };
      const timer = clock.setTimeout(done, Math.max(0, at - this.#time.now()));
      this.#poke = done;
      signal.addEventListener("abort", done, { once: true });
    });
  }
}
