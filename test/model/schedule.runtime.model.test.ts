/**
 * The schedule statechart's paths, taken by the real scheduler (issue #19
 * item 2). Paths are generated from `scheduleMachine` (every state and
 * count reachable with at most two fires in flight before a pass, two
 * fired, two given up, one of them for good: the shortest path to each),
 * for both missed-tick policies with a tick missed before the scheduler
 * started. Each path is replayed on a real
 * `Scheduler` over a memory schedule store, driven by a `ManualClock`:
 *
 *   ticks.due        the clock moves to the next tick (its pass fires it,
 *                    and the owed ticks)
 *   ticks.due (owed) the scheduler is poked between two ticks (its pass hands
 *                    out the owed ticks alone)
 *   tick.recorded    another runtime writes `lastTick` = the next tick, and
 *                    the clock moves there (nothing to fire)
 *   fire.settled ok  the oldest fire's submit resolves (it records lastTick)
 *   fire.settled !ok the oldest fire's submit fails for good (InvalidArgument)
 *   fire.settled !ok, again
 *                    the oldest fire's submit fails on a failure a later
 *                    attempt may mend (ConnectionUnavailable): its tick owed
 *   schedule.removed the record is deleted, the scheduler poked
 *
 * The oracle is what the test saw: the fires the scheduler asked for and the
 * store's lastTick, checked against the model's counts after every step; the
 * scheduler's own snapshot must be the model's state. The owed ticks are
 * checked against a ledger of the test's own (`OwedLedger`), not against the
 * statechart: the model does not know which tick the oldest fire in flight
 * has, so its `again` names a stand-in and only the count of owed ticks is
 * compared with it.
 */
import { getShortestPaths } from "@xstate/graph";
import { describe, expect, it } from "vitest";
import type { SnapshotFrom } from "xstate";
import { ConnectionUnavailable, InvalidArgument } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import type { MissedTicks } from "../../src/kernel/schedule-record.ts";
import {
  type ScheduleEvent,
  type ScheduleInput,
  scheduleMachine,
} from "../../src/machines/schedule.machine.ts";
import {
  memorySchedulesAt,
  runScheduler,
  schedulerAsleep,
  storeEverySchedule,
} from "../harness/memory-scheduler.ts";
import { waitUntil } from "../harness/wait.ts";

type Snap = SnapshotFrom<typeof scheduleMachine>;

const period = 1000;
const start = 1_800_000_000_000; // a tick: the scheduler starts 1 ms after it, so it was missed

/**
 * The state and counts (the owed ticks' count: the model's are stand-ins); and whether another
 * runtime's record just came (the cursor is left out: it only grows).
 */
const serializeState = (s: Snap, event?: ScheduleEvent): string =>
  JSON.stringify([
    s.value,
    s.context.inFlight,
    s.context.fired,
    s.context.givenUp,
    s.context.owed.length,
    event?.type === "tick.recorded",
  ]);
const sameState = (a: Snap, b: Snap): boolean => serializeState(a) === serializeState(b);

/**
 * The tick the model's `again` names: the model does not know the oldest fire's tick (the
 * replay fails that fire, the ledger learns its tick), so one stand-in per failure on the path,
 * below every real tick.
 */
const standIn = (failures: number): number => -1 - failures;
const isStandIn = (tick: number): boolean => tick < 0;

/** Events offered in a state, bounded so the graph is finite. */
const eventsIn = (s: Snap): ScheduleEvent[] => {
  if (s.status === "done") return []; // removed: nothing more happens to it
  const { inFlight, fired, givenUp, owed, cursor } = s.context;
  return [
    // A pass at the next tick: it hands out the owed ticks with it, as the scheduler's pass does.
    ...(inFlight < 2 ? [{ type: "ticks.due" as const, ticks: [...owed, cursor + period] }] : []),
    // A pass between two ticks: the owed ticks alone.
    ...(inFlight < 2 && owed.length > 0 ? [{ type: "ticks.due" as const, ticks: owed }] : []),
    // Another runtime's record (with ticks owed, its pass hands them out too: a ticks.due step).
    ...(owed.length === 0 ? [{ type: "tick.recorded" as const, lastTick: cursor + period }] : []),
    ...(inFlight > 0 && fired < 2 ? [{ type: "fire.settled" as const, ok: true }] : []),
    ...(inFlight > 0 && givenUp < 1 ? [{ type: "fire.settled" as const, ok: false }] : []),
    ...(inFlight > 0 && givenUp < 2
      ? [{ type: "fire.settled" as const, ok: false, again: standIn(givenUp) }]
      : []),
    { type: "schedule.removed" },
  ];
};

const stepName = (event: ScheduleEvent): string => {
  if (event.type === "ticks.due") return event.ticks.every(isStandIn) ? "ticks.due(owed)" : event.type;
  if (event.type !== "fire.settled") return event.type;
  return `${event.type}${event.ok ? "+" : "-"}${event.again === undefined ? "" : "again"}`;
};

const inputFor = (missed: MissedTicks): ScheduleInput => ({
  missed,
  cursor: start,
  missedTick: start - period,
});

const pathsFor = (missed: MissedTicks) =>
  getShortestPaths(scheduleMachine, {
    input: inputFor(missed),
    events: eventsIn,
    serializeState,
  } as never).map((path) => ({
    name: path.steps
      .slice(1)
      .map((s) => stepName(s.event as ScheduleEvent))
      .join(" → "),
    steps: path.steps.slice(1),
    end: path.state as Snap,
  }));

/** How a fire's submit ends: committed, refused for good, or failed while the server is away. */
type Outcome = "ok" | "refused" | "unavailable";

const outcomeOf = (event: ScheduleEvent & { type: "fire.settled" }): Outcome =>
  event.ok ? "ok" : event.again === undefined ? "refused" : "unavailable";

interface Fire {
  readonly tick: number;
  settle(outcome: Outcome): void;
}

/**
 * The oracle of the owed ticks, from what the test did and saw (never the statechart): a fire
 * the test failed with a failure a later attempt may mend leaves its tick owed until the
 * scheduler asks for it again; one the test ended otherwise is never asked for again here; any
 * other fire asked is of a tick never asked before. A pass asks again for every tick owed
 * (two at most here, fewer than a pass hands out), each once.
 */
class OwedLedger {
  readonly owed = new Set<number>();
  readonly #over = new Set<number>();
  readonly #asked = new Set<number>();
  #read = 0;

  settled(tick: number, outcome: Outcome): void {
    (outcome === "unavailable" ? this.owed : this.#over).add(tick);
  }

  /** Takes in the fires asked since the last call; after a pass, nothing is owed any more. */
  read(fires: readonly Fire[], afterPass: boolean): void {
    for (const { tick } of fires.slice(this.#read)) {
      expect(this.#over.has(tick), `tick ${tick} ended here, asked again`).toBe(false);
      if (this.owed.delete(tick)) continue;
      expect(this.#asked.has(tick), `tick ${tick} asked again, not owed`).toBe(false);
      this.#asked.add(tick);
    }
    this.#read = fires.length;
    if (afterPass) expect([...this.owed], "owed ticks the pass did not ask for").toEqual([]);
  }
}

/** A real scheduler on a memory store and a manual clock, with fires the test settles. */
const harness = async (missed: MissedTicks) => {
  const { clock, server, store } = memorySchedulesAt(start + 1);
  // Made 2.5 periods before the tick `start`: three ticks were missed, the latest at `start`.
  await storeEverySchedule(store, "s", period, start - 2.5 * period, missed);
  const fires: Fire[] = [];
  const pending: Fire[] = [];
  const run = runScheduler({
    store,
    clock,
    log: silentLogger(),
    refreshMs: 60_000,
    // One submit a round: a fire failing on a failure a later attempt may mend settles at once.
    fireAttempts: 1,
    fire: (_record, tick) =>
      new Promise<void>((resolve, reject) => {
        const fire: Fire = {
          tick,
          settle: (outcome) => {
            if (outcome === "ok") resolve();
            else if (outcome === "refused") reject(new InvalidArgument({ field: "job", message: "refused" }));
            else reject(new ConnectionUnavailable({ message: "no NATS connection (the server restarting)" }));
          },
        };
        fires.push(fire);
        pending.push(fire);
      }),
  });
  const asleep = () => schedulerAsleep(clock);
  await asleep();
  return {
    clock,
    store,
    scheduler: run.scheduler,
    fires,
    pending,
    asleep,
    snapshot: () => run.scheduler.states().get("s"),
    async stop() {
      for (const fire of pending.splice(0)) fire.settle("ok");
      await run.stop();
      server.close();
    },
  };
};

describe.each(["skip", "runOnce"] as const)(
  "the schedule statechart on the real scheduler, missed: %s",
  (missed) => {
    const paths = pathsFor(missed);

    it("reaches every state it has", () => {
      const states = new Set(paths.map((p) => JSON.stringify(p.end.value)));
      expect(states).toEqual(new Set(['"waiting"', '"firing"', '"removed"']));
      expect(paths.length).toBeGreaterThan(10);
      // Owed ticks: two at once, and one handed out by a pass at a tick and by one between ticks.
      expect(paths.some((p) => p.end.context.owed.length === 2)).toBe(true);
      expect(paths.some((p) => /again → ticks\.due( |$)/.test(p.name))).toBe(true);
      expect(paths.some((p) => p.name.includes("again → ticks.due(owed)"))).toBe(true);
    });

    it.each(paths.map((p) => [p.name || "(start)", p] as const))("%s", async (_name, path) => {
      const h = await harness(missed);
      const ledger = new OwedLedger();
      try {
        let cursor = start;
        let removed = false;
        const check = async (model: Snap, afterPass = false) => {
          if (removed) return expect(h.snapshot()).toBeUndefined();
          // Each fire the model started, asked of the real code.
          const started = model.context.inFlight + model.context.fired + model.context.givenUp;
          await waitUntil(() => sameState(h.snapshot() as Snap, model) && h.fires.length === started, {
            timeoutMs: 2000,
            intervalMs: 1,
            message: `scheduler at ${serializeState(model)} with ${started} fires, is ${serializeState(h.snapshot() as Snap)} with ${h.fires.length}`,
          });
          // Each tick once, but an owed one asked again (once, by the next pass); and the
          // scheduler's owed ticks are the ledger's.
          ledger.read(h.fires, afterPass);
          expect([...(h.snapshot() as Snap).context.owed]).toEqual([...ledger.owed].sort((a, b) => a - b));
          // lastTick: the latest tick among the fired ones (or one another runtime recorded).
          const stored = (await h.store.read("s"))?.record.lastTick;
          if (model.context.fired > 0) expect(stored).toBeGreaterThanOrEqual(start);
        };
        // The start: runOnce fires the latest missed tick (`start`), skip fires nothing.
        const [first] = getShortestPaths(scheduleMachine, { input: inputFor(missed), events: [] } as never);
        await check(first!.state as Snap);
        expect(h.fires.map((f) => f.tick)).toEqual(missed === "runOnce" ? [start] : []);
        for (const step of path.steps) {
          const event = step.event as ScheduleEvent;
          switch (event.type) {
            case "ticks.due":
              await h.asleep();
              if (event.ticks.every(isStandIn)) h.scheduler.poke();
              else {
                cursor += period;
                h.clock.advance(period);
              }
              break;
            case "tick.recorded": {
              await h.asleep();
              cursor += period;
              const stored = (await h.store.read("s"))!;
              await h.store.update({ ...stored.record, lastTick: cursor }, stored.revision);
              h.clock.advance(period);
              break;
            }
            case "fire.settled": {
              const fire = h.pending.shift()!;
              fire.settle(outcomeOf(event));
              ledger.settled(fire.tick, outcomeOf(event));
              break;
            }
            case "schedule.removed":
              await h.store.remove("s");
              h.scheduler.poke();
              await waitUntil(() => h.snapshot() === undefined, { timeoutMs: 2000, message: "removed" });
              removed = true;
              break;
          }
          await check(step.state as Snap, event.type === "ticks.due");
        }
        // After a remove, no tick fires however far the clock goes.
        if (removed) {
          const fired = h.fires.length;
          await h.asleep();
          h.clock.advance(61 * period);
          await h.asleep();
          expect(h.fires.length).toBe(fired);
        }
      } finally {
        await h.stop();
      }
    });
  },
);
