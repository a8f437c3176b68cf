import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import type { StatePath } from "@xstate/graph";
import { type Logger, pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import type { FailureOutcome, Runtime } from "../../src/index.ts";
import type { AgentRecord } from "../../src/kernel/agent-record.ts";
import type { Decision } from "../../src/kernel/choose-target.ts";
import type { AgentLockEvent, AgentLockState } from "../../src/machines/agent-lock.machine.ts";
import { createTestRuntime } from "../../src/testing.ts";
import { startNatsServer } from "../harness/nats-server.ts";

/**
 * The agent lock's generated paths, taken through `rt.agents` on a memory
 * runtime and on a runtime on a nats-server (the record in NATS KV, read back
 * raw after each path) (issue #9). test/model/agent-lock.model.test.ts replays the paths
 * on the machine with effects it settles by hand; here the same paths run on
 * the real registry and its store: the failures are reported through
 * `rt.agents.reportFailure`, and the path's decisions are made by the real
 * `decide` on the real record, which this test steers with what a user
 * controls (which target a failure names, what `load` says, whether
 * `onSwitch` throws). Checked: each failure's outcome, the lock states the
 * agent went through (`rt.agents.subscribe`), the failed `onSwitch` calls,
 * and the record the agent ends with.
 *
 * Paths the runtime cannot take are left out, and counted: an `evaluate` or
 * `write` that fails (the in-memory store never fails, and its CAS never
 * loses: one runtime has one writer), and a decision the record contradicts
 * (`exhausted` newly written for a target already recorded as exhausted; an
 * exhaustion "already known" after the path itself chose otherwise). A path
 * whose first decision is "already known" starts from a record where it is:
 * one failure exhausts the target before the replay.
 */

import { fromLockEvent, initialLock, stepLock } from "./agent-lock.oracle.ts";
import {
  decisions,
  input,
  type ModelEvent,
  type Snapshot,
  type Src,
  shortest,
  simple,
  transitions,
} from "./agent-lock.paths.ts";

// ---- from a path to a plan the runtime can take ----

type DecisionKind = "stale" | "switch" | "exhaustedNew" | "exhaustedKnown";

interface Plan {
  /** The record says the first target is exhausted before the replay starts. */
  readonly setup: boolean;
  /** Failures reported together (one burst each): the first takes the lock, the others queue. */
  readonly bursts: readonly number[];
  /** What the lock decides for each failure, in order, and whether its `onSwitch` throws. */
  readonly failures: ReadonlyArray<{ readonly decision: DecisionKind; readonly notifyFails: boolean }>;
  /** The lock states, without repeats. */
  readonly locks: readonly AgentLockState[];
}

const kindOf = (d: Decision): DecisionKind =>
  d.kind === "exhausted" ? (d.next === undefined ? "exhaustedKnown" : "exhaustedNew") : d.kind;

/** Effects still running when a path ends are settled the way they settle at run time, until the lock is idle. */
const settled: Record<Src, ModelEvent> = {
  evaluate: { type: "xstate.done.actor.evaluate", output: decisions.stale },
  write: { type: "xstate.done.actor.write", output: 3 },
  notifySwitch: { type: "xstate.done.actor.notifySwitch", output: undefined },
};

/**
 * The path's events, and after each the lock state the reference model (not
 * the machine) says the agent is in; effects still running at the end are
 * settled the way they settle at run time, until the model is idle.
 */
const toIdle = (path: StatePath<Snapshot, AgentLockEvent>) => {
  let model = initialLock(input.record);
  const steps: Array<{ event: AgentLockEvent; state: { value: AgentLockState } }> = [];
  for (const [n, { event }] of path.steps.entries()) {
    if (n > 0) model = stepLock(model, fromLockEvent(event as never), input.agentId);
    steps.push({ event, state: { value: model.state } });
  }
  while (model.state !== "idle") {
    const event = settled[model.running!.src] as AgentLockEvent;
    model = stepLock(model, fromLockEvent(event as never), input.agentId);
    steps.push({ event, state: { value: model.state } });
  }
  return steps;
};

/** The plan of a path, or undefined when the runtime cannot take it (see the header). */
const planOf = (path: StatePath<Snapshot, AgentLockEvent>): Plan | undefined => {
  let setup = false;
  let exhausted = false; // the record says the current target is exhausted
  let decided = false; // a decision other than stale was made
  let idle = true;
  const bursts: number[] = [];
  const failures: Array<{ decision: DecisionKind; notifyFails: boolean }> = [];
  const locks: AgentLockState[] = [];
  for (const [n, { event, state }] of toIdle(path).entries()) {
    if (locks.at(-1) !== state.value) locks.push(state.value);
    if (n === 0) continue;
    const e = event as ModelEvent;
    if (e.type === "failure.reported") {
      if (idle) bursts.push(0);
      bursts[bursts.length - 1]! += 1;
    } else if (e.type === "xstate.error.actor.evaluate" || e.type === "xstate.error.actor.write") {
      return undefined;
    } else if (e.type === "xstate.done.actor.evaluate") {
      const decision = kindOf((e as { output: Decision }).output);
      if (decision === "exhaustedKnown" && !exhausted) {
        if (decided) return undefined;
        setup = true;
        exhausted = true;
      }
      if (decision === "exhaustedNew" && exhausted) return undefined;
      if (decision !== "stale") decided = true;
      failures.push({ decision, notifyFails: false });
    } else if (e.type === "xstate.done.actor.write") {
      const last = failures.at(-1)!.decision;
      exhausted = last === "exhaustedNew";
    } else if (e.type === "xstate.error.actor.notifySwitch") {
      failures[failures.length - 1] = { ...failures.at(-1)!, notifyFails: true };
    }
    idle = state.value === "idle";
  }
  return failures.length === 0 ? undefined : { setup, bursts, failures, locks };
};

const generated = [...shortest, ...transitions, ...simple];
const plans = [
  ...new Map(
    generated
      .map(planOf)
      .filter((p): p is Plan => p !== undefined)
      .map((p) => [JSON.stringify(p), p] as const),
  ).values(),
];

const describePlan = (plan: Plan) => {
  let k = 0;
  const bursts = plan.bursts.map((size) => {
    const burst = plan.failures.slice(k, k + size);
    k += size;
    return burst.map((f) => `${f.decision}${f.notifyFails ? " (onSwitch throws)" : ""}`).join(" + ");
  });
  return `${plan.setup ? "[target already exhausted] " : ""}${bursts.join(" | ")}`;
};

// ---- the runtime side ----

/** Z is listed last, so never switched to: a failure on it is stale. */
const targets = ["A", "B", "C", "D", "E", "F", "Z"];

interface Expected {
  readonly target: string;
  readonly outcome: FailureOutcome;
}

/** What the real record and the real decision make of the plan: each failure's target and outcome. */
const expectations = (plan: Plan) => {
  let current = "A";
  let exhausted: string | undefined = plan.setup ? "A" : undefined;
  const skipped = new Set<string>();
  let switches = 0;
  const failed: Array<{ from: string; to: string }> = [];
  const left: string[] = [];
  const expected: Expected[] = plan.failures.map(({ decision, notifyFails }): Expected => {
    if (decision === "stale") return { target: "Z", outcome: { outcome: "stale", target: "Z", current } };
    const from = current;
    if (decision !== "switch") {
      exhausted = from;
      return { target: from, outcome: { outcome: "exhausted", target: from } };
    }
    const to = targets.find((t) => t !== from && t !== "Z" && !skipped.has(t))!;
    skipped.add(from);
    left.push(from);
    current = to;
    exhausted = undefined;
    switches += 1;
    if (notifyFails) failed.push({ from, to });
    return { target: from, outcome: { outcome: "switched", from, to } };
  });
  return { expected, failed, left, end: { current, switches, exhausted: exhausted === current } };
};

/** The record as the store holds it, read past the runtime: raw KV on NATS, the lock's view on memory. */
type RawRecord = (rt: Runtime, agentId: string) => Promise<AgentRecord | undefined>;

const onBroker = (
  kind: string,
  start: (logger: Logger) => Promise<{ rt: Runtime; raw: RawRecord; stop(): Promise<void> }>,
) =>
  describe(`agent-lock paths through rt.agents on ${kind}`, () => {
    const logged: Array<{ agentId?: string; msg: string; from?: string; to?: string }> = [];
    let rt: Runtime;
    let raw: RawRecord;
    let stop: () => Promise<void> = async () => undefined;
    beforeAll(async () => {
      // Failed onSwitch calls are not in the outcome (the switch stands): the registry logs them.
      const logger = pino(
        { level: "error" },
        { write: (line: string) => void logged.push(JSON.parse(line)) },
      );
      ({ rt, raw, stop } = await start(logger));
    });
    afterAll(async () => {
      await stop();
    });

    it("the generated paths the runtime can take cover every decision and a failing onSwitch", () => {
      expect(plans.length).toBeGreaterThan(20);
      const decided = new Set(plans.flatMap((p) => p.failures.map((f) => f.decision)));
      expect([...decided].sort()).toEqual(["exhaustedKnown", "exhaustedNew", "stale", "switch"]);
      expect(plans.some((p) => p.failures.some((f) => f.notifyFails))).toBe(true);
      expect(plans.some((p) => p.bursts.some((size) => size > 1))).toBe(true); // failures queue for the lock
      expect(plans.some((p) => p.setup)).toBe(true);
      // Z must never be needed as a switch target.
      for (const p of plans) expect(p.failures.filter((f) => f.decision === "switch").length).toBeLessThan(6);
    });

    it.each(plans.map((plan, i) => [i, describePlan(plan), plan] as const))(
      "path %i: %s",
      async (i, _name, plan) => {
        const agentId = `agent-${i}`;
        const { expected, failed, left, end } = expectations(plan);
        // `load` is asked once per candidate in one synchronous pass per decision (none for a stale
        // failure): each pass is the next decision, healthy (a switch) or not (exhausted).
        const healthy = [
          ...(plan.setup ? [false] : []),
          ...plan.failures.filter((f) => f.decision !== "stale").map((f) => f.decision === "switch"),
        ];
        let decisions = -1;
        let deciding = false;
        const load = (target: string) => {
          if (!deciding) {
            deciding = true;
            decisions += 1;
            queueMicrotask(() => {
              deciding = false;
            });
          }
          return healthy[decisions] ? targets.indexOf(target) : Number.NaN;
        };
        const throwing = plan.failures.filter((f) => f.decision === "switch").map((f) => f.notifyFails);
        let switches = 0;
        const onSwitch = () => {
          if (throwing[switches++]) throw new Error("restart failed");
        };
        await rt.agents.register({ agentId, targets, current: "A", load, onSwitch });
        if (plan.setup) {
          const setup = await rt.agents.reportFailure(agentId, {
            target: "A",
            error: new Error("A is down"),
          });
          expect(setup).toEqual({ outcome: "exhausted", target: "A" });
        }

        const locks: AgentLockState[] = [rt.agents.get(agentId)!.lock];
        const unsubscribe = rt.agents.subscribe((state) => {
          if (state.agentId === agentId && locks.at(-1) !== state.lock) locks.push(state.lock);
        });
        const answers: FailureOutcome[] = [];
        let next = 0;
        for (const size of plan.bursts) {
          const burst = expected
            .slice(next, next + size)
            .map(({ target }, n) =>
              rt.agents.reportFailure(agentId, { target, error: new Error(`${target} failed (#${n})`) }),
            );
          next += size;
          answers.push(...(await Promise.all(burst)));
        }
        unsubscribe();

        expect(answers).toEqual(expected.map((e) => e.outcome));
        expect(locks).toEqual(plan.locks);
        const notifyFailures = logged
          .filter((l) => l.agentId === agentId && /onSwitch failed/.test(l.msg))
          .map(({ from, to }) => ({ from, to }));
        expect(notifyFailures).toEqual(failed);
        expect(rt.agents.get(agentId)).toMatchObject({ ...end, lock: "idle", queued: 0 });
        expect(decisions + 1).toBe(healthy.length);
        // What the store holds: the current target, one switch per switch, a skip per target left.
        const stored = await raw(rt, agentId);
        expect(stored).toMatchObject({ v: 1, current: end.current, switches: end.switches });
        expect(stored?.exhausted?.target === stored?.current && stored?.exhausted !== undefined).toBe(
          end.exhausted,
        );
        expect(stored?.skips.map((k) => k.target).sort()).toEqual([...left].sort());
      },
    );
  });

onBroker("memory", async (logger) => {
  const rt = await createTestRuntime({ logger });
  // The in-process store has no outside to read from: its record as the registry reports it.
  const raw: RawRecord = async (_rt, agentId) => {
    const a = rt.agents.get(agentId);
    if (!a) return undefined;
    const { current, skips, switches } = a;
    return {
      v: 1,
      current,
      skips,
      switches,
      ...(a.exhausted ? { exhausted: { target: current, at: 0 } } : {}),
    };
  };
  return { rt, raw, stop: () => rt.stop() };
});

onBroker("NATS KV", async (logger) => {
  const server = await startNatsServer();
  const rt = await createRuntime({ servers: server.url, logger });
  const nc = await connect({ servers: server.url });
  const raw: RawRecord = async (_rt, agentId) => {
    const kv = await new Kvm(nc).open("jetstate_agents");
    const entry = await kv.get(agentId);
    return entry && entry.operation === "PUT" ? (entry.json() as AgentRecord) : undefined;
  };
  return {
    rt,
    raw,
    stop: async () => {
      await rt.stop();
      await nc.close();
      await server.dispose();
    },
  };
});
