import { createHash, randomUUID } from "node:crypto";
import type { Broker } from "../adapters/broker.ts";
import { plannedTasks, planSubmit, type SubmitRequest } from "../effects/plan-submit.ts";
import type { Clock } from "../kernel/clock.ts";
import { decode } from "../kernel/decode.ts";
import { InvalidArgument } from "../kernel/errors.ts";
import {
  checkGraph,
  encodeFlowRecord,
  type FlowNode,
  FlowPolicyShape,
  type FlowRecord,
  flowNodeKey,
  largestFlowRecord,
  type OnChildFailure,
} from "../kernel/flow-record.ts";
import { timesAsMs } from "../kernel/held-task.ts";
import { check, rejectUnknownKeys, SubjectToken } from "../kernel/validation.ts";

/** A job of a flow: a submit request (no idempotency key: the flow gives it one) and the jobs it waits for. */
export interface FlowJobRequest extends Omit<SubmitRequest, "idempotencyKey"> {
  /** Names of the flow's jobs that must end before this one is submitted. */
  readonly dependsOn?: readonly string[];
}

export interface FlowPolicy {
  /**
   * A job whose dependency failed (or was skipped): `fail` skips it and the
   * flow fails; `continue` runs it anyway, and the flow's end is that of the
   * jobs nothing depends on (the parent).
   * @defaultValue "fail"
   */
  readonly onChildFailure?: OnChildFailure;
}

/**
 * `rt.flows.submit()`: a DAG of named jobs (`jobs`), or its sugar, a parent
 * and its children (`parent` depends on every child; children are named
 * `child0`, `child1`, …, the parent `parent`).
 */
export type FlowRequest =
  | {
      readonly id?: string;
      readonly jobs: Readonly<Record<string, FlowJobRequest>>;
      readonly policy?: FlowPolicy;
    }
  | {
      readonly id?: string;
      readonly parent: Omit<FlowJobRequest, "dependsOn">;
      readonly children: ReadonlyArray<Omit<FlowJobRequest, "dependsOn">>;
      readonly policy?: FlowPolicy;
    };

const bad = (field: string, message: string): never => {
  throw new InvalidArgument({ field, message: `${field}: ${message}` });
};

/** The request in DAG form, checked field by field. */
const normalise = (
  request: unknown,
): { id: string | undefined; jobs: Record<string, FlowJobRequest>; policy: FlowPolicy } => {
  if (typeof request !== "object" || request === null) return bad("request", "must be an object");
  const r = request as Record<string, unknown>;
  let checkedPolicy: FlowPolicy = {};
  if (r.policy !== undefined) {
    const decoded = decode(FlowPolicyShape, r.policy, "policy");
    if (!decoded.ok) return bad(decoded.field, decoded.message);
    checkedPolicy = decoded.value;
  }
  const id = r.id === undefined ? undefined : check(SubjectToken, r.id, "id");
  if ("jobs" in r) {
    rejectUnknownKeys(r, ["id", "jobs", "policy"], "");
    if (typeof r.jobs !== "object" || r.jobs === null || Array.isArray(r.jobs))
      return bad("jobs", "must be an object of named jobs");
    return { id, jobs: r.jobs as Record<string, FlowJobRequest>, policy: checkedPolicy };
  }
  rejectUnknownKeys(r, ["id", "parent", "children", "policy"], "");
  if (typeof r.parent !== "object" || r.parent === null) return bad("parent", "must be a submit request");
  if (!Array.isArray(r.children) || r.children.length === 0)
    return bad("children", "must be a non-empty list of submit requests");
  const jobs: Record<string, FlowJobRequest> = {};
  r.children.forEach((child, n) => {
    if (typeof child !== "object" || child === null) bad(`children[${n}]`, "must be a submit request");
    if ("dependsOn" in child) bad(`children[${n}].dependsOn`, "unknown option in a parent/children flow");
    jobs[`child${n}`] = child as FlowJobRequest;
  });
  if ("dependsOn" in r.parent) bad("parent.dependsOn", "unknown option: the parent depends on every child");
  jobs.parent = { ...(r.parent as FlowJobRequest), dependsOn: Object.keys(jobs) };
  return { id, jobs, policy: checkedPolicy };
};

/** The field of a node's request as the user wrote it (`children[1].tasks[0]` or `jobs.b.tasks[0]`). */
const nodeField = (sugar: boolean, name: string, count: number, field: string): string => {
  if (!sugar) return `jobs.${name}.${field}`;
  if (name === "parent") return `parent.${field}`;
  return name.startsWith("child") && Number(name.slice(5)) < count
    ? `children[${name.slice(5)}].${field}`
    : field;
};

/**
 * Bytes a KV write adds to its record as nats.js counts it against the max
 * payload: its headers (the expected last sequence of a compare-and-set,
 * ~55 bytes), with room to spare.
 */
const kvWriteHeaderBytes = 128;

/**
 * The flow record a request asks for, checked whole before anything is
 * written; `checkSize` refuses it if it could outgrow the server's max
 * payload, asked of a new flow only: a resubmit of a flow already stored
 * (written by a version that checked less) gets its handle.
 */
export const planFlow = async (
  request: FlowRequest,
  broker: Broker,
  clock: Clock,
): Promise<{ readonly record: FlowRecord; readonly checkSize: () => void }> => {
  const sugar = typeof request === "object" && request !== null && "parent" in request;
  const { id: given, jobs, policy } = normalise(request);
  const id = given ?? `f${randomUUID().replaceAll("-", "")}`;
  const childCount = sugar ? Object.keys(jobs).length - 1 : 0;
  for (const [name, node] of Object.entries(jobs))
    if (typeof node !== "object" || node === null)
      bad(nodeField(sugar, name, childCount, "").replace(/\.$/, ""), "must be a submit request");
  checkGraph(jobs);
  const maxPayload = await broker.maxPayload();
  const now = clock.now();
  const nodes: Record<string, FlowNode> = {};
  /** What each node asks for, as its job's submit compares it: its queue and its request digest. */
  const asked = new Map<string, { queue: string; requestDigest: string | undefined }>();
  for (const [name, node] of Object.entries(jobs)) {
    const { dependsOn = [], ...submit } = node;
    if ("idempotencyKey" in submit)
      bad(
        nodeField(sugar, name, childCount, "idempotencyKey"),
        "a flow's job takes the flow's key (flow:<id>:<name>)",
      );
    const plan = await planSubmit(
      { ...submit, idempotencyKey: flowNodeKey(id, name) },
      maxPayload,
      now,
    ).catch((error: unknown) => {
      if (!(error instanceof InvalidArgument)) throw error;
      const field = nodeField(sugar, name, childCount, error.field ?? "request");
      throw new InvalidArgument({ field, message: `${field}: ${error.message.replace(/^[^:]*: /, "")}` });
    });
    const queue = typeof submit.queue === "string" ? submit.queue : submit.queue.name;
    asked.set(name, { queue: plan.record.queue, requestDigest: plan.record.requestDigest });
    nodes[name] = {
      // The tasks as the queue's schema made them: the driver submits by the queue's name.
      request: timesAsMs({ ...submit, queue, tasks: plannedTasks(plan) }),
      dependsOn: [...dependsOn],
      jobId: plan.record.id,
      status: "waiting",
    };
  }
  const onChildFailure = policy.onChildFailure ?? "fail";
  // What the flow asks for, however it was written: the nodes by name, each as its job's submit
  // compares it (the tasks as encoded and the settings with their defaults, whatever the order
  // of the request's fields), its dependencies sorted. A resubmit that wrote its jobs, fields or
  // dependencies in another order, or spelt out a default, was refused (review finding).
  const digest = `v2:${createHash("sha256")
    .update(
      JSON.stringify({
        onChildFailure,
        nodes: Object.keys(nodes)
          .sort()
          .map((name) => [
            name,
            asked.get(name)?.queue,
            asked.get(name)?.requestDigest,
            [...(nodes[name] as FlowNode).dependsOn].sort(),
          ]),
      }),
    )
    .digest("base64url")}`;
  const record: FlowRecord = {
    v: 1,
    id,
    status: "running",
    onChildFailure,
    nodes,
    digest,
    createdAt: now,
    updatedAt: now,
  };
  // As large as it grows by its end (every job's end and reason), with its write's headers: a
  // record that fit only as submitted failed every write once the reasons came, and the flow
  // never settled.
  const checkSize = () => {
    const size = Buffer.byteLength(encodeFlowRecord(largestFlowRecord(record))) + kvWriteHeaderBytes;
    if (size > maxPayload)
      bad(
        sugar ? "children" : "jobs",
        `the flow's record (every job's request, and room for each job's end) would reach ${size} bytes; ` +
          `the server's max payload allows ${maxPayload}: pass references to large inputs instead of the data`,
      );
  };
  return { record, checkSize };
};

/**
 * The digest a flow record written before `v2` digests holds: the nodes'
 * requests and dependencies as the user wrote them, in that order. A flow
 * stored then is the same flow as a resubmit that writes it as it was
 * written (the order of everything included).
 */
const writtenDigest = (record: FlowRecord): string =>
  `v1:${createHash("sha256")
    .update(
      JSON.stringify({
        onChildFailure: record.onChildFailure,
        nodes: Object.entries(record.nodes).map(([name, node]) => [name, node.request, node.dependsOn]),
      }),
    )
    .digest("base64url")}`;

/** Whether the flow `found` (stored) is the one `wanted` (just planned) asks for. */
export const isSameFlow = (found: FlowRecord, wanted: FlowRecord): boolean =>
  found.digest === wanted.digest ||
  (found.digest.startsWith("v1:") && found.digest === writtenDigest(wanted));
