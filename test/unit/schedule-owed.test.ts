/**
 * The schedule statechart's owed ticks (given up on a failure a later
 * attempt may mend): kept in order whatever `lastTick` says, handed out
 * again by the next `ticks.due` that names them, and bounded.
 */
import { describe, expect, it } from "vitest";
import { initialTransition, transition } from "xstate";
import { maxOwed, type ScheduleEvent, scheduleMachine } from "../../src/machines/schedule.machine.ts";

const start = () => initialTransition(scheduleMachine, { missed: "skip", cursor: 0 })[0];
const step = (snapshot: ReturnType<typeof start>, event: ScheduleEvent) =>
  transition(scheduleMachine, snapshot, event)[0];

describe("owed ticks", () => {
  it("stay owed past a later tick recorded, and leave once handed out", () => {
    let s = step(start(), { type: "ticks.due", ticks: [1000, 2000] });
    s = step(s, { type: "fire.settled", ok: false, again: 1000 });
    s = step(s, { type: "fire.settled", ok: true });
    s = step(s, { type: "tick.recorded", lastTick: 5000 });
    expect(s.context).toMatchObject({ owed: [1000], cursor: 5000 });
    s = step(s, { type: "ticks.due", ticks: [1000, 6000] });
    expect(s.context).toMatchObject({ owed: [], cursor: 6000, inFlight: 2 });
  });

  it(`keep the latest ${maxOwed}: the oldest past it is given up`, () => {
    const ticks = Array.from({ length: maxOwed + 5 }, (_, n) => (n + 1) * 1000);
    let s = step(start(), { type: "ticks.due", ticks });
    for (const tick of [...ticks].reverse()) s = step(s, { type: "fire.settled", ok: false, again: tick });
    expect(s.context.owed).toHaveLength(maxOwed);
    expect(s.context.owed[0]).toBe(6000);
    expect(s.context.owed.at(-1)).toBe(ticks.at(-1));
  });
});
