import type { StatePath } from "@xstate/graph";
import { describe, expect, it } from "vitest";
import { type Actor, createActor, fromPromise, type InspectionEvent } from "xstate";
import type { Decision } from "../../src/kernel/choose-target.ts";
import {
  type AgentLockEmitted,
  type AgentLockEvent,
  agentLockMachine,
  type EvaluateInput,
  MAX_CONFLICTS,
  type NotifySwitchInput,
  type WriteInput,
} from "../../src/machines/agent-lock.machine.ts";
import { fromLockEvent, initialLock, stepLock } from "./agent-lock.oracle.ts";
import {
  input,
  type ModelEvent,
  type Snapshot,
  type Src,
  shortest,
  simple,
  transitions,
} from "./agent-lock.paths.ts";
import { transitionRecorder, transitionsOf } from "./coverage.ts";

/**
 * Paths are generated from the machine (only to get event sequences), then
 * replayed on a real actor whose invoked effects are promises the test settles
 * by hand: a path step `xstate.done.actor.write` becomes "resolve the write
 * the actor started". Every step is compared with the reference model
 * (agent-lock.oracle.ts), which knows the lock's rules but not its machine:
 * lock state, mailbox, record, replies, and the effect running with its input.
 * The last test asserts that the replays took every transition.
 */

interface Pending {
  readonly input: unknown;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/** The real machine with effects the test settles; records what each invocation was given. */
const controlledActor = (inspect: (e: InspectionEvent) => void) => {
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
  const actor = createActor(machine, { input, inspect });
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

const replay = async (
  path: StatePath<Snapshot, AgentLockEvent>,
  inspect: (e: InspectionEvent) => void = () => undefined,
) => {
  const { actor, pending, emitted } = controlledActor(inspect);
  let model = initialLock(input.record);
  let reported = 0;
  let writesDone = 0;
  // The first step is the synthetic xstate.init: the actor is already there.
  for (const { event } of path.steps.slice(1)) {
    const step = event as ModelEvent;
    model = stepLock(model, fromLockEvent(step as never), input.agentId);
    const settled = /^xstate\.(done|error)\.actor\.(\w+)$/.exec(step.type);
    if (settled === null) {
      reported += 1;
      actor.send(step as AgentLockEvent);
    } else {
      const src = settled[2] as Src;
      const effect = pending.get(src);
      expect(effect, `${src} is running when the path settles it`).toBeDefined();
      pending.delete(src);
      const next = nextSnapshot(actor);
      if ("output" in step) effect!.resolve(step.output);
      else if ("error" in step) effect!.reject(step.error);
      await next;
      if (src === "write" && "output" in step) writesDone += 1;
    }
    // The live actor against the reference model: lock state, mailbox, record, replies …
    const live = actor.getSnapshot();
    const c = live.context;
    expect({
      state: live.value,
      queue: c.queue,
      failure: c.failure,
      decision: c.decision,
      conflicts: c.conflicts,
      record: c.record,
    }).toEqual({
      state: model.state,
      queue: model.queue,
      failure: model.failure,
      decision: model.decision,
      conflicts: model.conflicts,
      record: model.record,
    });
    expect(emitted).toEqual(model.replies);
    // … and the effect it runs, with the input the model says.
    expect([...pending.keys()]).toEqual(model.running ? [model.running.src] : []);
    if (model.running) expect(pending.get(model.running.src)?.input).toEqual(model.running.input);

    // No failure is lost or answered twice: each is queued, holds the lock, or got one reply.
    const replies = emitted.filter((e) => e.type !== "switch.notify-failed");
    const holding = c.failure === undefined ? 0 : 1;
    expect(replies.length + c.queue.length + holding).toBe(reported);
    // A switch is only ever announced after its record was written.
    const switches = replies.filter((e) => e.type === "failure.handled" && e.result.outcome === "switched");
    expect(switches.length).toBeLessThanOrEqual(writesDone);
    expect(c.conflicts).toBeLessThanOrEqual(MAX_CONFLICTS);
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
      await replay(path);
    },
  );

  it.each(simple.map((path, i) => [i, describePath(path), path] as const))(
    "simple path %i: %s",
    async (_, __, path) => {
      await replay(path);
    },
  );
});

describe("agent-lock machine: transition coverage", () => {
  it("the replays take every transition of the machine", async () => {
    const recorder = transitionRecorder(agentLockMachine);
    for (const path of transitions) await replay(path, recorder.inspect);
    expect(transitionsOf(agentLockMachine)).toHaveLength(12);
    expect(recorder.missing()).toEqual([]);
  });
});
