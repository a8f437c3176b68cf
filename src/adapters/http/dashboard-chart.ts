/**
 * A statechart's definition as plain JSON, for the dashboard's page to draw:
 * nested state nodes and the transitions that change state. Read from an
 * XState 5 machine's `root` state node, typed structurally here so the HTTP
 * adapter needs neither xstate nor the machines: the API hands the nodes in.
 */

/** The part of an XState 5 `StateNode` read here. */
export interface StateNodeLike {
  readonly id: string;
  readonly key: string;
  readonly type: string;
  readonly initial?: { readonly target?: readonly { readonly id: string }[] } | undefined;
  readonly states: Readonly<Record<string, StateNodeLike>>;
  readonly transitions: ReadonlyMap<string, readonly TransitionLike[]>;
  readonly always?: readonly TransitionLike[] | undefined;
}

interface TransitionLike {
  readonly target?: readonly { readonly id: string }[] | undefined;
  readonly guard?: unknown;
}

interface ChartNode {
  readonly id: string;
  readonly key: string;
  /** `atomic`, `compound`, `parallel`, `final` or `history`. */
  readonly type: string;
  /** The id of the child entered first (compound nodes). */
  readonly initial?: string;
  readonly children: readonly ChartNode[];
}

/** A transition that moves to another state; `event` is `always` for eventless ones. */
interface ChartEdge {
  readonly source: string;
  readonly target: string;
  readonly event: string;
  readonly guard?: string;
}

export interface Chart {
  readonly id: string;
  readonly root: ChartNode;
  readonly edges: readonly ChartEdge[];
}

/** A guard's name: a named guard is its string, `and([...])` lists its parts, an inline one is `guarded`. */
const guardName = (guard: unknown): string | undefined => {
  if (guard === undefined) return undefined;
  if (typeof guard === "string") return guard;
  const parts = (guard as { guards?: unknown }).guards;
  if (Array.isArray(parts)) return `and(${parts.map((g) => guardName(g) ?? "?").join(", ")})`;
  const type = (guard as { type?: unknown }).type;
  return typeof type === "string" ? type : "guarded";
};

/**
 * The chart of a machine's root node. Transitions without a target (actions
 * only, or ones that swallow an event) change no state and are left out:
 * drawn, they would be loops on every box.
 */
export const chartOf = (root: StateNodeLike): Chart => {
  const edges: ChartEdge[] = [];
  const walk = (node: StateNodeLike): ChartNode => {
    const add = (event: string, t: TransitionLike) => {
      const guard = guardName(t.guard);
      for (const target of t.target ?? [])
        edges.push({ source: node.id, target: target.id, event, ...(guard ? { guard } : {}) });
    };
    for (const [event, list] of node.transitions) for (const t of list) add(event, t);
    for (const t of node.always ?? []) add("always", t);
    const initial = node.initial?.target?.[0]?.id;
    return {
      id: node.id,
      key: node.key,
      type: node.type,
      ...(initial ? { initial } : {}),
      children: Object.values(node.states).map(walk),
    };
  };
  const tree = walk(root);
  return { id: root.id, root: tree, edges };
};
