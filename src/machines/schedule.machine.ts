import { assign, setup } from "xstate";
import type { MissedTicks } from "../kernel/schedule-record.ts";

/**
 * One schedule's life as one runtime's scheduler sees it (api/scheduler.ts
 * runs it with XState's pure `transition`, one snapshot per schedule):
 *
 *   starting ─(runOnce and a tick was missed: fire it)→ firing
 *   starting ─(skip, or nothing missed)→ waiting
 *   waiting ─ticks.due (fire each)→ firing ─fire.settled (the last in flight)→ waiting
 *   waiting | firing ─schedule.removed→ removed
 *
 * The ticks themselves (cron, time zones) are computed outside, where croner
 * is: an event brings the ticks that fell due, the input the one missed tick.
 * A tick's fire is the submit of its job under the tick's key and the move
 * of `lastTick`; several may be in flight (`firing` counts them). A tick
 * another runtime recorded first moves the cursor without a fire. A tick
 * given up on a failure a later attempt may mend is owed: the next pass
 * hands it out again, whatever the cursor and `lastTick` say. A new rule
 * starts a new snapshot: its ticks are those after it.
 */

export interface ScheduleInput {
  readonly missed: MissedTicks;
  /** The ticks up to here are done (the later of the rule's start, its last fired tick, the scheduler's start). */
  readonly cursor: number;
  /** The latest tick that fell after the last fired one and before this scheduler ran; none: none fell. */
  readonly missedTick?: number;
}

export interface ScheduleContext {
  readonly missed: MissedTicks;
  readonly cursor: number;
  readonly missedTick?: number;
  /** Fires started and not settled. */
  readonly inFlight: number;
  /** Fires that settled with the job committed and `lastTick` moved. */
  readonly fired: number;
  /** Fires given up (an error no retry mends, or the attempts ran out); other runtimes fire them too. */
  readonly givenUp: number;
  /**
   * Ticks given up on a failure a later attempt may mend, not handed out
   * again yet, oldest first: the scheduler's next pass hands them out with
   * the ticks that fell due, wherever the cursor is (at most `maxOwed`).
   */
  readonly owed: readonly number[];
}

export type ScheduleEvent =
  /** These ticks fell due (after the cursor), or are owed (before it); oldest first. */
  | { readonly type: "ticks.due"; readonly ticks: readonly number[] }
  /** Another runtime recorded `lastTick`: the ticks up to it are done. */
  | { readonly type: "tick.recorded"; readonly lastTick: number }
  /**
   * One fire ended: its job committed and its tick recorded (`ok`), or given
   * up; `again`: on a failure a later attempt may mend, so that tick is
   * owed and the next pass fires it again.
   */
  | { readonly type: "fire.settled"; readonly ok: boolean; readonly again?: number }
  | { readonly type: "schedule.removed" };

/** Ticks owed at most; past it the oldest is given up for good (a very long outage of a short period). */
export const maxOwed = 1000;

/** `owed` with `tick` added in order, the oldest dropped past `maxOwed`. */
const owe = (owed: readonly number[], tick: number): readonly number[] => {
  const next = [...owed.filter((t) => t !== tick), tick].sort((a, b) => a - b);
  return next.length > maxOwed ? next.slice(next.length - maxOwed) : next;
};

/** The action the scheduler carries out: fire each tick (submit its job, then record it). */
export interface FireAction {
  readonly type: "fire";
  readonly params: { readonly ticks: readonly number[] };
}

export const scheduleMachine = setup({
  types: {
    context: {} as ScheduleContext,
    input: {} as ScheduleInput,
    events: {} as ScheduleEvent,
  },
  actions: {
    // Carried out by the scheduler from the actions `transition` returns.
    fire: (_, _params: FireAction["params"]) => undefined,
    due: assign(({ context, event }) =>
      event.type === "ticks.due"
        ? {
            cursor: Math.max(context.cursor, ...event.ticks),
            inFlight: context.inFlight + event.ticks.length,
            owed: context.owed.filter((tick) => !event.ticks.includes(tick)),
          }
        : {},
    ),
    recorded: assign(({ context, event }) =>
      event.type === "tick.recorded" ? { cursor: Math.max(context.cursor, event.lastTick) } : {},
    ),
    settle: assign(({ context, event }) =>
      event.type === "fire.settled"
        ? {
            inFlight: context.inFlight - 1,
            fired: context.fired + (event.ok ? 1 : 0),
            givenUp: context.givenUp + (event.ok ? 0 : 1),
            ...(event.again === undefined ? {} : { owed: owe(context.owed, event.again) }),
          }
        : {},
    ),
  },
  guards: {
    runOnceMissed: ({ context }) => context.missed === "runOnce" && context.missedTick !== undefined,
    someDue: ({ event }) => event.type === "ticks.due" && event.ticks.length > 0,
    lastInFlight: ({ context }) => context.inFlight <= 1,
  },
}).createMachine({
  id: "schedule",
  context: ({ input }) => ({
    missed: input.missed,
    cursor: input.cursor,
    ...(input.missedTick === undefined ? {} : { missedTick: input.missedTick }),
    inFlight: 0,
    fired: 0,
    givenUp: 0,
    owed: [],
  }),
  initial: "starting",
  states: {
    starting: {
      always: [
        {
          guard: "runOnceMissed",
          target: "firing",
          actions: [
            assign({ inFlight: 1 }),
            { type: "fire", params: ({ context }) => ({ ticks: [context.missedTick as number] }) },
          ],
        },
        { target: "waiting" },
      ],
    },
    waiting: {
      on: {
        "ticks.due": {
          guard: "someDue",
          target: "firing",
          actions: ["due", { type: "fire", params: ({ event }) => ({ ticks: event.ticks }) }],
        },
        "tick.recorded": { actions: "recorded" },
        "schedule.removed": { target: "removed" },
      },
    },
    firing: {
      on: {
        "ticks.due": {
          guard: "someDue",
          actions: ["due", { type: "fire", params: ({ event }) => ({ ticks: event.ticks }) }],
        },
        "tick.recorded": { actions: "recorded" },
        "fire.settled": [
          { guard: "lastInFlight", target: "waiting", actions: "settle" },
          { actions: "settle" },
        ],
        "schedule.removed": { target: "removed" },
      },
    },
    removed: { type: "final" },
  },
});
