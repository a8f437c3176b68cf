import type { AnyStateMachine, AnyStateNode, AnyTransitionDefinition, InspectionEvent } from "xstate";

/**
 * Transition coverage, read from the machine's definition and from what live
 * actors did.
 *
 * A transition is one candidate of a state node: `<state id> <event> #<n>`,
 * where `<event>` is `always` for an eventless one and `n` its position among
 * the candidates for that event (a guarded transition and its fallback are two
 * transitions, and so is a targetless "ignore" like `connection.reset: {}`).
 * The key is built from the transition's own source node, so it is the same
 * for the machine and for a copy made by `.provide()`.
 */

const nodesOf = (node: AnyStateNode): AnyStateNode[] => [
  node,
  ...(Object.values(node.states) as AnyStateNode[]).flatMap(nodesOf),
];

export const transitionKey = (t: AnyTransitionDefinition): string => {
  const source = t.source as AnyStateNode;
  if (t.eventType === "") return `${source.id} always #${source.always?.indexOf(t) ?? -1}`;
  return `${source.id} ${t.eventType} #${source.transitions.get(t.eventType)?.indexOf(t) ?? -1}`;
};

/** Every transition the machine defines (events, eventless, delayed, invoke done/error). */
export const transitionsOf = (machine: AnyStateMachine): string[] =>
  nodesOf(machine.root as AnyStateNode).flatMap((node) => [
    ...[...node.transitions.values()].flat().map(transitionKey),
    ...(node.always ?? []).map(transitionKey),
  ]);

/**
 * Collects the transitions live actors of `machine` take, from the
 * `@xstate.microstep` inspection events: pass `inspect` to `createActor`, or
 * to a runtime's `inspect` option (actors of other machines are ignored).
 */
export const transitionRecorder = (machine: AnyStateMachine) => {
  const known = new Set(transitionsOf(machine));
  const taken = new Set<string>();
  return {
    taken,
    inspect: (event: InspectionEvent) => {
      if (event.type !== "@xstate.microstep") return;
      for (const t of event._transitions) {
        const key = transitionKey(t);
        if (known.has(key)) taken.add(key);
      }
    },
    /** Transitions not taken, minus those listed as unreachable by design. */
    missing: (unreachable: Readonly<Record<string, string>> = {}) =>
      [...known].filter((key) => !taken.has(key) && !(key in unreachable)).sort(),
  };
};
