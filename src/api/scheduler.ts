import { Effect } from "effect";
import type { ScheduleStore } from "../adapters/schedule-store.ts";
import { backoffSchedule } from "../effects/retry.ts";
import type { Clock } from "../kernel/clock.ts";
import {
  IdempotencyConflict,
  InvalidArgument,
  RevisionConflict,
  RoleNotHeld,
  RuntimeStopped,
} from "../kernel/errors.ts";
import type { Logger } from "../kernel/logger.ts";
import { type ScheduleRecord, tickKey } from "../kernel/schedule-record.ts";
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

/** What firing a tick does: submit the schedule's job under the tick's key (`rt.jobs.submit`). */
export type FireTick = (record: ScheduleRecord, tick: number, key: string) => Promise<void>;

export interface SchedulerDeps {
  readonly store: ScheduleStore;
  readonly clock: Clock;
  readonly log: Logger;
  readonly fire: FireTick;
  /** Runs `work` as the runtime's work: `stop()` waits for it. */
  readonly track: (name: string, work: () => Promise<unknown>) => void;
  /** The longest sleep between two passes. @defaultValue 1000 */
  readonly refreshMs?: number;
}

/** How many due ticks of one schedule a pass fires at most: a runtime that stalled longer fires the latest. */
const maxCatchUp = 20;
/** Submits of one tick before this runtime gives it up (other runtimes fire it too). */
const fireAttempts = 12;

/** What a scheduler keeps per schedule: the rule it saw, and the last tick it handled (fired or skipped). */
interface Seen {
  readonly since: number;
  cursor: number;
}

/** Errors no retry mends: the tick is given up here (logged). */
const permanent = (error: unknown): boolean =>
  error instanceof InvalidArgument ||
  error instanceof IdempotencyConflict ||
  error instanceof RoleNotHeld ||
  error instanceof RuntimeStopped;

export class Scheduler {
  readonly #deps: SchedulerDeps;
  readonly #seen = new Map<string, Seen>();
  #startedAt = 0;
  #poke: (() => void) | undefined;

  constructor(deps: SchedulerDeps) {
    this.#deps = deps;
  }

  /** Runs passes until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const { clock, log } = this.#deps;
    this.#startedAt = clock.now();
    const refreshMs = this.#deps.refreshMs ?? 1000;
    while (!signal.aborted) {
      let wake = clock.now() + refreshMs;
      try {
        wake = Math.min(wake, this.#pass((await this.#deps.store.list()).map((s) => s.record)));
      } catch (error) {
        if (signal.aborted) return;
        log.warn({ err: error }, "schedules not read; trying again");
      }
      await this.#sleepUntil(wake, signal);
    }
  }

  /** A schedule changed here (upsert, remove): the next pass now, not at the next wake. */
  poke(): void {
    this.#poke?.();
  }

  /** Fires what fell due; returns when the next tick of any schedule falls. */
  #pass(records: readonly ScheduleRecord[]): number {
    const now = this.#deps.clock.now();
    let wake = Number.POSITIVE_INFINITY;
    const present = new Set<string>();
    for (const record of records) {
      present.add(record.id);
      const seen = this.#see(record);
      seen.cursor = Math.max(seen.cursor, record.lastTick ?? Number.NEGATIVE_INFINITY);
      const due = ticksBetween(record.rule, seen.cursor, now, maxCatchUp);
      for (const tick of due) this.#fire(record, tick);
      seen.cursor = due.at(-1) ?? seen.cursor;
      const next = nextTick(record.rule, Math.max(seen.cursor, now));
      if (next !== undefined) wake = Math.min(wake, next);
    }
    // Removed: its ticks stop here.
    for (const id of this.#seen.keys()) if (!present.has(id)) this.#seen.delete(id);
    return wake;
  }

  /**
   * What this runtime keeps of `record`, from its first sight of this rule.
   * Its ticks up to the later of the rule's start and its last fired tick are
   * done; those after that but before this scheduler started fell while it
   * did not run: missed, skipped, or the latest one fired once (`runOnce`).
   */
  #see(record: ScheduleRecord): Seen {
    const known = this.#seen.get(record.id);
    if (known && known.since === record.since) return known;
    const anchor = Math.max(record.since, record.lastTick ?? Number.NEGATIVE_INFINITY);
    const seen: Seen = { since: record.since, cursor: Math.max(anchor, this.#startedAt) };
    this.#seen.set(record.id, seen);
    if (record.missed === "runOnce") {
      const [latest] = ticksBetween(record.rule, anchor, this.#startedAt, 1);
      if (latest !== undefined) {
        this.#deps.log.info(
          { schedule: record.id, tick: new Date(latest).toISOString() },
          "firing the latest missed tick once",
        );
        this.#fire(record, latest);
      }
    }
    return seen;
  }

  /** Submits the tick's job (retried), then moves the schedule's `lastTick` up to it. */
  #fire(record: ScheduleRecord, tick: number): void {
    const { log, track } = this.#deps;
    const key = tickKey(record.id, tick);
    log.info({ schedule: record.id, tick: new Date(tick).toISOString(), key }, "firing tick");
    track(`schedule.${record.id}`, async () => {
      const submitted = Effect.tryPromise({
        try: () => this.#deps.fire(record, tick, key),
        catch: (error) => error,
      }).pipe(
        Effect.retry({
          schedule: backoffSchedule({ initialMs: 200, maxMs: 5000, jitter: true }),
          times: fireAttempts - 1,
          while: (error) => !permanent(error),
        }),
      );
      try {
        await Effect.runPromise(submitted);
      } catch (error) {
        if (error instanceof RuntimeStopped) return;
        log.error({ schedule: record.id, key, err: error }, "tick not fired here; given up");
        return;
      }
      await this.#recordTick(record.id, tick);
    });
  }

  /** `lastTick` moves up to `tick` by compare-and-set, never back; a lost race is read again. */
  async #recordTick(id: string, tick: number): Promise<void> {
    const { store, clock } = this.#deps;
    for (let attempt = 0; attempt < 5; attempt++) {
      const stored = await store.read(id);
      if (!stored || (stored.record.lastTick ?? Number.NEGATIVE_INFINITY) >= tick) return;
      try {
        await store.update({ ...stored.record, lastTick: tick, updatedAt: clock.now() }, stored.revision);
        return;
      } catch (error) {
        if (!(error instanceof RevisionConflict)) throw error;
      }
    }
  }

  #sleepUntil(at: number, signal: AbortSignal): Promise<void> {
    const { clock } = this.#deps;
    return new Promise<void>((resolve) => {
      const done = () => {
        clock.clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.#poke = undefined;
        resolve();
      };
      const timer = clock.setTimeout(done, Math.max(0, at - clock.now()));
      this.#poke = done;
      signal.addEventListener("abort", done, { once: true });
    });
  }
}
