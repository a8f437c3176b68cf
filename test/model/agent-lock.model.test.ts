import type { StatePath } from "@xstate/graph";
import { describe, expect, it } from "vitest";
import { type Actor, createActor, fromPromise, initialTransition, transition } from "xstate";
import type { Decision } from "../../src/effects/choose-target.ts";
import {
  type AgentLockEmitted,
  type AgentLockEvent,
  agentLockMachine,
  type EvaluateInput,
  MAX_CONFLICTS,
  type NotifySwitchInput,
  type WriteInput,
} from "../../src/machines/agent-lock.machine.ts";
import {
  input,
  invokedIn,
  type ModelEvent,
  type Snapshot,
  type Src,
  shortest,
  simple,
  transitions,
} from "./agent-lock.paths.ts";

/**
 * Paths are generated from the machine itself, then replayed on a real actor
 * whose invoked effects are promises the test settles by hand: a path step
 * `xstate.done.actor.write` becomes "resolve the write the actor started".
 * So every step checks that the live actor invoked what the model says, and
 * reached the model's state.
 */

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
