import { getShortestPaths, getSimplePaths, type StatePath } from "@xstate/graph";
import { describe, expect, it } from "vitest";
import {
  type Actor,
  createActor,
  fromPromise,
  initialTransition,
  type SnapshotFrom,
  transition,
} from "xstate";
import type { AgentRecord } from "../../src/effects/agent-store.ts";
import type { Decision } from "../../src/effects/choose-target.ts";
import { RevisionConflict } from "../../src/errors.ts";
import {
  type AgentLockEmitted,
  type AgentLockEvent,
  agentLockMachine,
  type EvaluateInput,
  MAX_CONFLICTS,
  type NotifySwitchInput,
  type WriteInput,
} from "../../src/machines/agent-lock.machine.ts";

/**
 * Paths are generated from the machine itself, then replayed on a real actor
 * whose invoked effects are promises the test settles by hand: a path step
 * `xstate.done.actor.write` becomes "resolve the write the actor started".
 * So every step checks that the live actor invoked what the model says, and
 * reached the model's state.
 */

type Snapshot = SnapshotFrom<typeof agentLockMachine>;
type Src = "evaluate" | "write" | "notifySwitch";
type ModelEvent =
  | AgentLockEvent
  | { type: `xstate.done.actor.${Src}`; output: unknown }
  | { type: `xstate.error.actor.${Src}`; error: unknown };

const initial: AgentRecord = { v: 1, current: "A", skips: [], switches: 0 };
const switched: AgentRecord = { v: 1, current: "B", skips: [{ target: "A", until: 7_200_000 }], switches: 1 };
const exhaustedOnA: AgentRecord = { ...initial, exhausted: { target: "A", at: 1 } };

const decisions: Record<string, Decision> = {
  // Another process moved the agent to C: distinct from our own switch to B.
  stale: { kind: "stale", record: { ...switched, current: "C" }, revision: 2 },
  switch: { kind: "switch", from: "A", to: "B", record: initial, next: switched, revision: 1 },
  exhaustedNew: { kind: "exhausted", record: initial, next: exhaustedOnA, revision: 1 },
  exhaustedKnown: { kind: "exhausted", record: exhaustedOnA, next: undefined, revision: 2 },
};

const failure = { id: "f", target: "A", reason: "upstream 503" };

/** How each effect can end; an outcome is offered only while its effect runs. */
const outcomes: Record<Src, ModelEvent[]> = {
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

const invokedIn: Record<string, Src | undefined> = {
  idle: undefined,
  evaluating: "evaluate",
  writing: "write",
  notifying: "notifySwitch",
};

/** At most one failure waits, which keeps the graph finite and still exercises the queue. */
const events = (state: Snapshot): ModelEvent[] => {
  const running = invokedIn[String(state.value)];
  return [
    ...(state.context.queue.length === 0 ? [{ type: "failure.reported" as const, failure }] : []),
    ...(running ? outcomes[running] : []),
  ];
};

const input = { agentId: "agent-1", record: initial };
// @xstate/graph types `events` by the machine's own events; the invoke results are synthetic ones.
const traversal = { events: events as unknown as (state: Snapshot) => AgentLockEvent[], input };

const shortest = getShortestPaths(agentLockMachine, traversal);

// A shortest path per state does not take every transition (two routes can end in the same
// state), so each one is extended by every event its state accepts: full transition coverage.
const transitions = shortest.flatMap((head) =>
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
const simple = getSimplePaths(agentLockMachine, {
  ...traversal,
  serializeState: (s) => `${String(s.value)}|${s.context.queue.length}|${s.context.decision?.kind}`,
});

interface Pending {
  readonly input: unknown;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/** The real machine with effects the test settles; records what each invocation was given. */
const controlledActor = () => {
  const pending = new Map<Src, Pending>();
  const control =
    <O, I>(src: Src) =>
    ({ input }: { input: I }) =>
      new Promise<O>((resolve, reject) => {
        pending.set(src, { input, resolve: resolve as (value: unknown) => void, reject });
      });
  const machine = agentLockMachine.provide({
    actors: {
      evaluate: fromPromise(control<Decision, EvaluateInput>("evaluate")),
      write: fromPromise(control<number, WriteInput>("write")),
      notifySwitch: fromPromise(control<void, NotifySwitchInput>("notifySwitch")),
    },
  });
  const actor = createActor(machine, { input });
  const emitted: AgentLockEmitted[] = [];
  actor.on("*", (event) => void emitted.push(event));
  actor.start();
  return { actor, pending, emitted };
};

const nextSnapshot = (actor: Actor<typeof agentLockMachine>) =>
  new Promise<void>((resolve) => {
    const subscription = actor.subscribe(() => {
      subscription.unsubscribe();
      resolve();
    });
  });

/** What the pure machine says a step does: next snapshot, replies it emits, effects it starts. */
const predict = (snapshot: Snapshot, event: ModelEvent) => {
  const [next, actions] = transition(agentLockMachine, snapshot, event as AgentLockEvent);
  const emits: unknown[] = [];
  const starts = new Map<string, unknown>();
  for (const action of actions) {
    const params = action.params as { event?: unknown; src?: unknown; input?: unknown } | undefined;
    if (String(action.type) === "xstate.emit") emits.push(params?.event);
    if (String(action.type) === "xstate.spawnChild") starts.set(String(params?.src), params?.input);
  }
  return { next, emits, starts };
};

const replay = async (path: StatePath<Snapshot, AgentLockEvent>, exact: boolean) => {
  const { actor, pending, emitted } = controlledActor();
  let [expected] = initialTransition(agentLockMachine, input);
  const expectedEmits: unknown[] = [];
  let reported = 0;
  let writesDone = 0;
  // The first step is the synthetic xstate.init: the actor is already there.
  for (const { event, state } of path.steps.slice(1)) {
    const step = event as ModelEvent;
    const prediction = predict(expected, step);
    const settled = /^xstate\.(done|error)\.actor\.(\w+)$/.exec(step.type);
    if (settled === null) {
      reported += 1;
      actor.send(step as AgentLockEvent);
    } else {
      const src = settled[2] as Src;
      const effect = pending.get(src);
      expect(effect, `${src} is running when the model settles it`).toBeDefined();
      pending.delete(src);
      const next = nextSnapshot(actor);
      if ("output" in step) effect!.resolve(step.output);
      else if ("error" in step) effect!.reject(step.error);
      await next;
      if (src === "write" && "output" in step) writesDone += 1;
    }
    expected = prediction.next;
    expectedEmits.push(...prediction.emits);
    const live = actor.getSnapshot();
    expect({ value: live.value, context: live.context }).toEqual({
      value: expected.value,
      context: expected.context,
    });
    // Coarse-keyed (simple) paths carry a representative state, not this exact one.
    if (exact)
      expect({ value: state.value, context: state.context }).toEqual({
        value: live.value,
        context: live.context,
      });
    expect(emitted).toEqual(expectedEmits);

    // The live actor runs exactly the effect of its state, with the input the model decided.
    const running = invokedIn[String(live.value)];
    expect([...pending.keys()]).toEqual(running ? [running] : []);
    for (const [src, startedWith] of prediction.starts)
      expect(pending.get(src as Src)?.input).toEqual(startedWith);

    // No failure is lost or answered twice: each is queued, holds the lock, or got one reply.
    const replies = emitted.filter((e) => e.type !== "switch.notify-failed");
    const holding = live.context.failure === undefined ? 0 : 1;
    expect(replies.length + live.context.queue.length + holding).toBe(reported);
    // A switch is only ever announced after its record was written.
    const switches = replies.filter((e) => e.type === "failure.handled" && e.result.outcome === "switched");
    expect(switches.length).toBeLessThanOrEqual(writesDone);
    expect(live.context.conflicts).toBeLessThanOrEqual(MAX_CONFLICTS);
  }
  actor.stop();
};

const describePath = (path: StatePath<Snapshot, AgentLockEvent>) =>
  path.steps
    .slice(1)
    .map(({ event }) => {
      const e = event as ModelEvent;
      if ("output" in e && typeof e.output === "object" && e.output !== null && "kind" in e.output) {
        return `${e.type.replace("xstate.done.actor.", "")}=${String(e.output.kind)}`;
      }
      if (e.type.startsWith("xstate.error") && "error" in e)
        return `${e.type.replace("xstate.error.actor.", "")}!${(e.error as Error).name}`;
      return e.type.replace("xstate.done.actor.", "");
    })
    .join(" → ") || "(initial)";

describe("agent-lock machine: model-based paths replayed on the real actor", () => {
  it("the model reaches every lock state and the conflict bound", () => {
    const values = new Set(shortest.map((p) => String(p.state.value)));
    expect([...values].sort()).toEqual(["evaluating", "idle", "notifying", "writing"]);
    expect(shortest.some((p) => p.state.context.conflicts === MAX_CONFLICTS)).toBe(true);
    expect(simple.length).toBeGreaterThan(shortest.length / 4);
  });

  it.each(transitions.map((path, i) => [i, describePath(path), path] as const))(
    "transition %i: %s",
    async (_, __, path) => {
      await replay(path, true);
    },
  );

  it.each(simple.map((path, i) => [i, describePath(path), path] as const))(
    "simple path %i: %s",
    async (_, __, path) => {
      await replay(path, false);
    },
  );
});
