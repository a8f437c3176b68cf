import { getShortestPaths, getSimplePaths, type StatePath } from "@xstate/graph";
import { type SnapshotFrom, transition } from "xstate";
import type { AgentRecord } from "../../src/kernel/agent-record.ts";
import type { Decision } from "../../src/kernel/choose-target.ts";
import { RevisionConflict } from "../../src/kernel/errors.ts";
import { type AgentLockEvent, agentLockMachine } from "../../src/machines/agent-lock.machine.ts";

/**
 * The agent lock's model: the events each state accepts (a reported failure,
 * and the ways the running effect can end) and the paths generated from the
 * machine with them. Shared by the replay on hand-settled effects
 * (agent-lock.model.test.ts) and the replay through a runtime
 * (agent-lock.runtime.model.test.ts).
 */

export type Snapshot = SnapshotFrom<typeof agentLockMachine>;
export type Src = "evaluate" | "write" | "notifySwitch";
export type ModelEvent =
  | AgentLockEvent
  | { type: `xstate.done.actor.${Src}`; output: unknown }
  | { type: `xstate.error.actor.${Src}`; error: unknown };

export const initial: AgentRecord = { v: 1, current: "A", skips: [], switches: 0 };
export const switched: AgentRecord = {
  v: 1,
  current: "B",
  skips: [{ target: "A", until: 7_200_000 }],
  switches: 1,
};
export const exhaustedOnA: AgentRecord = { ...initial, exhausted: { target: "A", at: 1 } };

export const decisions: Record<string, Decision> = {
  // Another process moved the agent to C: distinct from our own switch to B.
  stale: { kind: "stale", record: { ...switched, current: "C" }, revision: 2 },
  switch: { kind: "switch", from: "A", to: "B", record: initial, next: switched, revision: 1 },
  exhaustedNew: { kind: "exhausted", record: initial, next: exhaustedOnA, revision: 1 },
  exhaustedKnown: { kind: "exhausted", record: exhaustedOnA, next: undefined, revision: 2 },
};

export const failure = { id: "f", target: "A", reason: "upstream 503" };

/** How each effect can end; an outcome is offered only while its effect runs. */
export const outcomes: Record<Src, ModelEvent[]> = {
  evaluate: [
    ...Object.values(decisions).map((output) => ({ type: "xstate.done.actor.evaluate" as const, output })),
    { type: "xstate.error.actor.evaluate", error: new Error("store unreachable") },
  ],
  write: [
    { type: "xstate.done.actor.write", output: 3 },
    { type: "xstate.error.actor.write", error: new RevisionConflict({ key: "agent-1", message: "lost" }) },
    { type: "xstate.error.actor.write", error: new Error("store unreachable") },
  ],
  notifySwitch: [
    { type: "xstate.done.actor.notifySwitch", output: undefined },
    { type: "xstate.error.actor.notifySwitch", error: new Error("restart failed") },
  ],
};

export const invokedIn: Record<string, Src | undefined> = {
  idle: undefined,
  evaluating: "evaluate",
  writing: "write",
  notifying: "notifySwitch",
};

/** At most one failure waits, which keeps the graph finite and still exercises the queue. */
export const events = (state: Snapshot): ModelEvent[] => {
  const running = invokedIn[String(state.value)];
  return [
    ...(state.context.queue.length === 0 ? [{ type: "failure.reported" as const, failure }] : []),
    ...(running ? outcomes[running] : []),
  ];
};

export const input = { agentId: "agent-1", record: initial };
// @xstate/graph types `events` by the machine's own events; the invoke results are synthetic ones.
export const traversal = { events: events as unknown as (state: Snapshot) => AgentLockEvent[], input };

export const shortest = getShortestPaths(agentLockMachine, traversal);

// A shortest path per state does not take every transition (two routes can end in the same
// state), so each one is extended by every event its state accepts: full transition coverage.
export const transitions = shortest.flatMap((head) =>
  events(head.state).map((event): StatePath<Snapshot, AgentLockEvent> => {
    const [state] = transition(agentLockMachine, head.state, event as AgentLockEvent);
    return {
      state,
      steps: [...head.steps, { event: event as AgentLockEvent, state }],
      weight: head.weight + 1,
    };
  }),
);
// Simple paths of the full state explode (the conflict counter alone gives 9 copies of each
// state), so they are enumerated over a coarse key: every distinct route between lock states.
export const simple = getSimplePaths(agentLockMachine, {
  ...traversal,
  serializeState: (s) => `${String(s.value)}|${s.context.queue.length}|${s.context.decision?.kind}`,
});
