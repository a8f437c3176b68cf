/**
 * The schedule statechart's paths, taken by the real scheduler (issue #19
 * item 2). Paths are generated from `scheduleMachine` (every state and
 * count reachable with at most two fires in flight, two fired, one given
 * up: the shortest path to each), for both missed-tick policies with a tick
 * missed before the scheduler started. Each path is replayed on a real
 * `Scheduler` over a memory schedule store, driven by a `ManualClock`:
 *
 *   ticks.due        the clock moves to the next tick (its pass fires it)
 *   tick.recorded    another runtime writes `lastTick` = the next tick, and
 *                    the clock moves there (nothing to fire)
 *   fire.settled ok  the oldest fire's submit resolves (it records lastTick)
 *   fire.settled !ok the oldest fire's submit fails for good (InvalidArgument)
 *   schedule.removed the record is deleted, the scheduler poked
 *
 * The oracle is what the test saw: the fires the scheduler asked for (each
 * tick once, in order) and the store's lastTick, checked against the model's
 * counts after every step; and the scheduler's own snapshot must be the
 * model's state.
 */
import { getShortestPaths } from "@xstate/graph";
import { describe, expect, it } from "vitest";
import type { SnapshotFrom } from "xstate";
import { MemoryKv } from "../../src/adapters/memory/memory-kv.ts";
import { memoryScheduleStore } from "../../src/adapters/memory/memory-schedule-store.ts";
import { Scheduler } from "../../src/api/scheduler.ts";
import { ManualClock } from "../../src/kernel/clock.ts";
import { InvalidArgument } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import type { MissedTicks, ScheduleRecord } from "../../src/kernel/schedule-record.ts";
import {
  type ScheduleEvent,
  type ScheduleInput,
  scheduleMachine,
} from "../../src/machines/schedule.machine.ts";
import { waitUntil } from "../harness/wait.ts";

type Snap = SnapshotFrom<typeof scheduleMachine>;

const period = 1000;
const start = 1_800_000_000_000; // a tick: the scheduler starts 1 ms after it, so it was missed

/** The state and counts; and whether another runtime's record just came (the cursor is left out: it only grows). */
const serializeState = (s: Snap, event?: ScheduleEvent): string =>
  JSON.stringify([
    s.value,
    s.context.inFlight,
    s.context.fired,
    s.context.givenUp,
    event?.type === "tick.recorded",
  ]);
const sameState = (a: Snap, b: Snap): boolean => serializeState(a) === serializeState(b);

/** Events offered in a state, bounded so the graph is finite. */
const eventsIn = (s: Snap): ScheduleEvent[] => {
  if (s.status === "done") return []; // removed: nothing more happens to it
  const { inFlight, fired, givenUp } = s.context;
  return [
    ...(inFlight < 2 ? [{ type: "ticks.due" as const, ticks: [s.context.cursor + period] }] : []),
    { type: "tick.recorded", lastTick: s.context.cursor + period },
    ...(inFlight > 0 && fired < 2 ? [{ type: "fire.settled" as const, ok: true }] : []),
    ...(inFlight > 0 && givenUp < 1 ? [{ type: "fire.settled" as const, ok: false }] : []),
    { type: "schedule.removed" },
  ];
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
      .map((s) => `${s.event.type}${"ok" in s.event ? (s.event.ok ? "+" : "-") : ""}`)
      .join(" → "),
    steps: path.steps.slice(1),
    end: path.state as Snap,
  }));

interface Fire {
  readonly tick: number;
  settle(ok: boolean): void;
}

/** A real scheduler on a memory store and a manual clock, with fires the test settles. */
const harness = async (missed: MissedTicks) => {
  const clock = new ManualClock(start + 1);
  const store = memoryScheduleStore(new MemoryKv((key) => `schedule ${key}`), () => undefined);
  const record: ScheduleRecord = {
    v: 1,
    id: "s",
    rule: { everyMs: period },
    missed,
    job: { queue: "q", tasks: [1] },
    // Made 2.5 periods before the tick `start`: three ticks were missed, the latest at `start`.
    since: start - 2.5 * period,
    createdAt: start - 2.5 * period,
    updatedAt: start - 2.5 * period,
  };
  await store.create(record);
  const fires: Fire[] = [];
  const pending: Fire[] = [];
  const tracked = new Set<Promise<unknown>>();
  const scheduler = new Scheduler({
    store,
    clock,
    log: silentLogger(),
    refreshMs: 60_000,
    track: (_name, work) => {
      const running = work();
      tracked.add(running);
      void running.finally(() => tracked.delete(running));
    },
    fire: (_record, tick) =>
      new Promise<void>((resolve, reject) => {
        const fire: Fire = {
          tick,
          settle: (ok) =>
            ok ? resolve() : reject(new InvalidArgument({ field: "job", message: "refused" })),
        };
        fires.push(fire);
        pending.push(fire);
      }),
  });
  const stop = new AbortController();
  const running = scheduler.run(stop.signal);
  const asleep = () => waitUntil(() => clock.pending > 0, { timeoutMs: 2000, message: "scheduler asleep" });
  await asleep();
  return {
    clock,
    store,
    scheduler,
    fires,
    pending,
    asleep,
    snapshot: () => scheduler.states().get("s"),
    async stop() {
      stop.abort();
      for (const fire of pending.splice(0)) fire.settle(true);
      await running;
      await Promise.allSettled([...tracked]);
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
    });

    it.each(paths.map((p) => [p.name || "(start)", p] as const))("%s", async (_name, path) => {
      const h = await harness(missed);
      try {
        let cursor = start;
        let removed = false;
        const check = async (model: Snap) => {
          if (removed) return expect(h.snapshot()).toBeUndefined();
          await waitUntil(() => sameState(h.snapshot() as Snap, model), {
            timeoutMs: 2000,
            message: `scheduler at ${serializeState(model)}, is ${serializeState(h.snapshot() as Snap)}`,
          });
          // Each fire the model started, asked of the real code: once per tick, in order.
          const started = model.context.inFlight + model.context.fired + model.context.givenUp;
          expect(h.fires.length).toBe(started);
          expect(new Set(h.fires.map((f) => f.tick)).size).toBe(h.fires.length);
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
              cursor += period;
              h.clock.advance(period);
              break;
            case "tick.recorded": {
              await h.asleep();
              cursor += period;
              const stored = (await h.store.read("s"))!;
              await h.store.update({ ...stored.record, lastTick: cursor }, stored.revision);
              h.clock.advance(period);
              break;
            }
            case "fire.settled":
              h.pending.shift()!.settle(event.ok);
              break;
            case "schedule.removed":
              await h.store.remove("s");
              h.scheduler.poke();
              await waitUntil(() => h.snapshot() === undefined, { timeoutMs: 2000, message: "removed" });
              removed = true;
              break;
          }
          await check(step.state as Snap);
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
