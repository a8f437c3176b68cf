import { Schema } from "effect";
import { decode } from "./decode.ts";
import { InvalidArgument } from "./errors.ts";
import { boundReason, maxReasonBytes } from "./reason.ts";

/**
 * A flow: jobs of jobs, a DAG of named nodes, each a job submitted once the
 * nodes it depends on have ended. The flow record (KV `<prefix>_flows`, key =
 * flow id, `v: 1`, compare-and-set writes) is written before any node's job
 * and names every node with its whole request: it is the intent and the
 * commit point. Whoever drives the flow next rolls it forward from it
 * (`stepFlow`, pure), so a crash at any step leaves either nothing or a
 * record that finishes.
 */

export const FlowStatus = {
  running: "running",
  succeeded: "succeeded",
  failed: "failed",
  cancelled: "cancelled",
} as const;
export type FlowStatus = (typeof FlowStatus)[keyof typeof FlowStatus];

/**
 * A node's life: `waiting` (a dependency has not ended: no job yet),
 * `submitting` (its job is being submitted), `running`, then an end:
 * `succeeded`, `failed`, `skipped` (a dependency did not succeed and the
 * policy is `fail`: never submitted) or `cancelled` (the flow was cancelled
 * before it was submitted).
 */
export const NodeStatus = {
  waiting: "waiting",
  submitting: "submitting",
  running: "running",
  succeeded: "succeeded",
  failed: "failed",
  skipped: "skipped",
  cancelled: "cancelled",
} as const;
export type NodeStatus = (typeof NodeStatus)[keyof typeof NodeStatus];

const isNodeFinal = (status: NodeStatus): boolean =>
  status === "succeeded" || status === "failed" || status === "skipped" || status === "cancelled";

/** Whether every node has ended: no job of the flow runs or is still to be submitted or cancelled. */
export const allNodesEnded = (nodes: Readonly<Record<string, { readonly status: NodeStatus }>>): boolean =>
  Object.values(nodes).every((node) => isNodeFinal(node.status));

const isFlowFinal = (status: FlowStatus): boolean => status !== FlowStatus.running;

/** What a failed dependency does to its dependents: `fail` skips them (default), `continue` runs them anyway. */
export type OnChildFailure = "fail" | "continue";

export interface FlowNode {
  /** The node's submit request as given (the queue by name), without an idempotency key: the flow's is used. */
  readonly request: Readonly<Record<string, unknown>>;
  readonly dependsOn: readonly string[];
  /** Derived from the flow id and the node name (`flow:<flowId>:<name>` as idempotency key): one job however often submitted. */
  readonly jobId: string;
  readonly status: NodeStatus;
  readonly reason?: string;
}

export interface FlowRecord {
  readonly v: 1;
  readonly id: string;
  readonly status: FlowStatus;
  readonly onChildFailure: OnChildFailure;
  readonly nodes: Readonly<Record<string, FlowNode>>;
  /**
   * What was asked for (nodes and policy), so a resubmit under the same id
   * can be told apart. `v2:` hashes each node as its job's submit compares
   * it, whatever the order it was written in; `v1:` (older records) the
   * requests as written.
   */
  readonly digest: string;
  readonly createdAt: number;
  readonly updatedAt: number;
  readonly finishedAt?: number;
  readonly reason?: string;
}

/** The idempotency key of a flow node's job: a flow id has no `:`, so the key names one flow and node. */
export const flowNodeKey = (flowId: string, name: string): string => `flow:${flowId}:${name}`;

/** The flow and node a job's idempotency key names, if it is a flow node's. */
export const flowNodeOfKey = (key: string | undefined): { flowId: string; name: string } | undefined => {
  const match = key === undefined ? null : /^flow:([A-Za-z0-9_-]+):([A-Za-z0-9_-]+)$/.exec(key);
  return match ? { flowId: match[1] as string, name: match[2] as string } : undefined;
};

/** The most nodes a flow may have: every step of the flow reads its record, which names each node. */
const maxFlowNodes = 1000;

const NodeName = Schema.String.check(
  Schema.isPattern(/^[A-Za-z0-9_-]{1,64}$/, { message: "must be 1–64 of A–Z a–z 0–9 _ -" }),
);

/** What a flow submit gives besides the nodes' own requests: checked with this shape. */
export const FlowPolicyShape = Schema.Struct({
  onChildFailure: Schema.optionalKey(Schema.Literals(["fail", "continue"])),
});

const DependsOn = Schema.Array(NodeName);

/** The names of the nodes and their dependencies; throws `InvalidArgument` naming the field on a bad graph. */
export const checkGraph = (nodes: Readonly<Record<string, { readonly dependsOn?: unknown }>>): void => {
  const names = Object.keys(nodes);
  if (names.length === 0) bad("jobs", "a flow needs at least one job");
  if (names.length > maxFlowNodes) bad("jobs", `at most ${maxFlowNodes} jobs per flow`);
  for (const name of names) {
    const named = decode(NodeName, name, `jobs.${name}`);
    if (!named.ok) bad(`jobs.${name}`, `a job's name ${named.message}`);
    // Assigned to a plain object, this name would set its prototype, not add a job.
    if (name === "__proto__") bad(`jobs.${name}`, "a job's name cannot be __proto__");
    const deps = nodes[name]?.dependsOn;
    if (deps === undefined) continue;
    const decoded = decode(DependsOn, deps, `jobs.${name}.dependsOn`);
    if (!decoded.ok) throw invalid(decoded.field, decoded.message);
    decoded.value.forEach((dep, n) => {
      // Its own jobs only: `in` also finds what every object inherits (`constructor`, `toString`).
      if (!Object.hasOwn(nodes, dep))
        bad(`jobs.${name}.dependsOn[${n}]`, `no job named ${JSON.stringify(dep)} in the flow`);
      if (dep === name) bad(`jobs.${name}.dependsOn[${n}]`, "a job cannot depend on itself");
      // Once: the same request without the repeat would be another request (its digest).
      if (decoded.value.indexOf(dep) !== n)
        bad(`jobs.${name}.dependsOn[${n}]`, `${JSON.stringify(dep)} is named twice`);
    });
  }
  const cycle = findCycle(names, (name) => (nodes[name]?.dependsOn as readonly string[] | undefined) ?? []);
  if (cycle) bad(`jobs.${cycle[0]}.dependsOn`, `the dependencies form a cycle: ${cycle.join(" → ")}`);
};

/** A cycle of the graph as a path of names (first = last), or undefined: a depth-first search. */
const findCycle = (
  names: readonly string[],
  depsOf: (name: string) => readonly string[],
): string[] | undefined => {
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (name: string): string[] | undefined => {
    if (state.get(name) === "done") return undefined;
    if (state.get(name) === "open") return [...path.slice(path.indexOf(name)), name];
    state.set(name, "open");
    path.push(name);
    for (const dep of depsOf(name)) {
      const found = visit(dep);
      if (found) return found;
    }
    path.pop();
    state.set(name, "done");
    return undefined;
  };
  for (const name of names) {
    const found = visit(name);
    if (found) return found;
  }
  return undefined;
};

const invalid = (field: string, message: string): InvalidArgument =>
  new InvalidArgument({ field, message: `${field}: ${message}` });

const bad = (field: string, message: string): never => {
  throw invalid(field, message);
};

/** A node's job as the driver read it: none yet (or rolled back), being submitted, running, or ended. */
export type ObservedJob =
  | { readonly kind: "none" }
  | { readonly kind: "pending" }
  | { readonly kind: "running" }
  | { readonly kind: "ended"; readonly status: "succeeded" | "failed"; readonly reason?: string };

/**
 * The reason of a node cancelled with its flow while its job was being
 * submitted: that submit may still land, and its job is then cancelled.
 */
export const cancelledInSubmit = "flow cancelled while its job was being submitted";

/** One step of a flow: the record as it should now be, the nodes to submit, the jobs to cancel. */
export interface FlowStep {
  readonly record: FlowRecord;
  readonly submit: readonly string[];
  readonly cancel: readonly string[];
}

/**
 * The rule of a flow, one step at a time: from the record and what each
 * node's job is now, the next record and what to do. Pure and idempotent: a
 * step taken twice (two drivers, a driver that died and another that came
 * after) submits the same nodes, whose jobs are one each by their key.
 *
 * - A node whose job was not looked at (`observed` gives undefined) is left
 *   as it is: a driver looks only at the nodes whose job changed.
 * - A node whose dependencies have all ended is submitted; under `fail`, one
 *   whose dependency did not succeed is `skipped` (with the reason) instead.
 * - A node `submitting` without a job (its submitter died, or its submit was
 *   rolled back) is submitted again, unless the flow was cancelled: then it
 *   is `cancelled`, and its job, should the submit still land, is cancelled.
 * - The flow ends once every node has: under `fail` it succeeds when every
 *   node succeeded; under `continue` when every node no other depends on (the
 *   parent) succeeded. A cancelled flow stays cancelled.
 */
export const stepFlow = (
  record: FlowRecord,
  observed: (name: string) => ObservedJob | undefined,
  now: number,
): FlowStep => {
  const nodes: Record<string, FlowNode> = { ...record.nodes };
  const submit: string[] = [];
  const cancel: string[] = [];
  const cancelled = record.status === FlowStatus.cancelled;
  for (const [name, node] of Object.entries(nodes)) {
    if (isNodeFinal(node.status)) continue;
    const job = observed(name);
    // Not looked at (its job did not change): left as the record says.
    if (job === undefined) continue;
    if (job.kind === "ended") {
      const { reason, ...rest } = node;
      nodes[name] = {
        ...rest,
        status: job.status,
        ...(job.reason ? { reason: boundReason(job.reason) } : {}),
      };
    } else if (job.kind === "running") {
      nodes[name] = { ...node, status: NodeStatus.running };
      if (cancelled) cancel.push(node.jobId);
    } else if (job.kind === "none" && node.status !== NodeStatus.waiting) {
      // Submitting (or running, and its record gone): submit again, or give up if cancelled.
      if (cancelled) nodes[name] = { ...node, status: NodeStatus.cancelled, reason: cancelledInSubmit };
      else submit.push(name);
    }
  }
  // In dependency order, so a skip reaches every dependent in one step.
  for (const name of topologicalOrder(nodes)) {
    const node = nodes[name] as FlowNode;
    if (node.status !== NodeStatus.waiting) continue;
    if (cancelled) {
      nodes[name] = { ...node, status: NodeStatus.cancelled, reason: "flow cancelled" };
      continue;
    }
    const deps = node.dependsOn.map((dep) => [dep, nodes[dep] as FlowNode] as const);
    if (!deps.every(([, dep]) => isNodeFinal(dep.status))) continue;
    const blocked = deps.find(([, dep]) => dep.status !== NodeStatus.succeeded);
    if (blocked && record.onChildFailure === "fail") {
      nodes[name] = {
        ...node,
        status: NodeStatus.skipped,
        reason: `dependency ${blocked[0]} ${blocked[1].status}`,
      };
      continue;
    }
    nodes[name] = { ...node, status: NodeStatus.submitting };
    submit.push(name);
  }
  const allEnded = allNodesEnded(nodes);
  let next: FlowRecord = { ...record, nodes };
  if (allEnded && !isFlowFinal(record.status)) next = { ...next, ...flowEnd(next), finishedAt: now };
  else if (allEnded && cancelled && record.finishedAt === undefined) next = { ...next, finishedAt: now };
  const changed = JSON.stringify(next) !== JSON.stringify(record);
  return { record: changed ? { ...next, updatedAt: now } : record, submit, cancel };
};

/** The end of a flow whose nodes have all ended, by its policy. */
const flowEnd = (record: FlowRecord): { status: FlowStatus; reason?: string } => {
  const entries = Object.entries(record.nodes);
  const dependedOn = new Set(entries.flatMap(([, node]) => node.dependsOn));
  const judged =
    record.onChildFailure === "fail" ? entries : entries.filter(([name]) => !dependedOn.has(name));
  const bad = judged.find(([, node]) => node.status !== NodeStatus.succeeded);
  if (!bad) return { status: FlowStatus.succeeded };
  // The first node that failed says why; a skipped one only says which dependency did.
  const failed = entries.find(([, node]) => node.status === NodeStatus.failed) ?? bad;
  return {
    status: FlowStatus.failed,
    reason: boundReason(
      `job ${failed[0]} ${failed[1].status}${failed[1].reason ? `: ${failed[1].reason}` : ""}`,
    ),
  };
};

/** The node names, each after its dependencies (the graph was checked acyclic). */
const topologicalOrder = (nodes: Readonly<Record<string, { readonly dependsOn: readonly string[] }>>) => {
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string): void => {
    if (seen.has(name)) return;
    seen.add(name);
    for (const dep of nodes[name]?.dependsOn ?? []) visit(dep);
    order.push(name);
  };
  for (const name of Object.keys(nodes)) visit(name);
  return order;
};

/** True when nothing more will happen to the flow: it ended and so did every node. */
export const isSettled = (record: FlowRecord): boolean =>
  isFlowFinal(record.status) && allNodesEnded(record.nodes);

const FlowNodeShape = Schema.Struct({
  request: Schema.Record(Schema.String, Schema.Unknown),
  dependsOn: Schema.Array(Schema.String),
  jobId: Schema.String,
  status: Schema.Literals(Object.values(NodeStatus)),
  reason: Schema.optionalKey(Schema.String),
});

const FlowRecordShape = Schema.Struct({
  v: Schema.Literal(1),
  id: Schema.String,
  status: Schema.Literals(Object.values(FlowStatus)),
  onChildFailure: Schema.Literals(["fail", "continue"]),
  nodes: Schema.Record(Schema.String, FlowNodeShape),
  digest: Schema.String,
  createdAt: Schema.Number,
  updatedAt: Schema.Number,
  finishedAt: Schema.optionalKey(Schema.Number),
  reason: Schema.optionalKey(Schema.String),
});

const boundedReason = <T extends { readonly reason?: string }>(value: T): T =>
  value.reason === undefined ? value : { ...value, reason: boundReason(value.reason) };

/** The record as stored: every reason bounded (`boundReason`: a record that outgrew the max payload never settled). */
export const encodeFlowRecord = (record: FlowRecord): string =>
  JSON.stringify(
    boundedReason({
      ...record,
      nodes: Object.fromEntries(
        Object.entries(record.nodes).map(([name, node]) => [name, boundedReason(node)]),
      ),
    }),
  );

/**
 * The record as large as it can grow by its end: every node ended with a
 * reason of the most bytes, the flow too, with its end's time. What a submit
 * checks against the server's max payload.
 */
export const largestFlowRecord = (record: FlowRecord): FlowRecord => {
  const reason = "x".repeat(maxReasonBytes);
  const longest = <S extends string>(statuses: readonly S[]): S =>
    statuses.reduce((a, b) => (b.length > a.length ? b : a));
  return {
    ...record,
    status: longest(Object.values(FlowStatus)),
    reason,
    finishedAt: record.updatedAt,
    nodes: Object.fromEntries(
      Object.entries(record.nodes).map(([name, node]) => [
        name,
        { ...node, status: longest(Object.values(NodeStatus)), reason },
      ]),
    ),
  };
};

/** A flow record read back; an unknown version or shape fails loudly. */
export const decodeFlowRecord = (text: string): FlowRecord => {
  const value: unknown = JSON.parse(text);
  const decoded = decode(FlowRecordShape, value, "", { open: true });
  if (decoded.ok) return value as FlowRecord;
  const v = (value as { v?: unknown } | null)?.v;
  if (v !== 1) throw new Error(`unsupported flow record version ${String(v)}`);
  throw new Error(`flow record is unreadable: ${decoded.field || "record"}: ${decoded.message}`);
};

/** The record, or undefined when it cannot be read (a newer version's, or damaged): a pass over every flow skips it. */
export const decodeFlowIfReadable = (text: string): FlowRecord | undefined => {
  try {
    return decodeFlowRecord(text);
  } catch {
    return undefined;
  }
};
