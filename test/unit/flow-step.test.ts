/**
 * The rule of a flow (`stepFlow`, kernel/flow-record.ts), one step at a
 * time, against hand-written expectations: which nodes are submitted,
 * skipped or cancelled, and how the flow ends under each policy. The graph
 * checks name the field.
 */
import { describe, expect, it } from "vitest";
import { InvalidArgument } from "../../src/kernel/errors.ts";
import {
  checkGraph,
  decodeFlowRecord,
  encodeFlowRecord,
  type FlowRecord,
  largestFlowRecord,
  type ObservedJob,
  stepFlow,
} from "../../src/kernel/flow-record.ts";
import { longTexts } from "../harness/long-texts.ts";

const flow = (deps: Record<string, string[]>, onChildFailure: "fail" | "continue" = "fail"): FlowRecord => ({
  v: 1,
  id: "f",
  status: "running",
  onChildFailure,
  digest: "d",
  createdAt: 0,
  updatedAt: 0,
  nodes: Object.fromEntries(
    Object.entries(deps).map(([name, dependsOn]) => [
      name,
      { request: { queue: "q", tasks: [1] }, dependsOn, jobId: `j${name}`, status: "waiting" as const },
    ]),
  ),
});

const jobs =
  (seen: Record<string, ObservedJob>) =>
  (name: string): ObservedJob =>
    seen[name] ?? { kind: "none" };
const ended = (status: "succeeded" | "failed", reason?: string): ObservedJob => ({
  kind: "ended",
  status,
  ...(reason ? { reason } : {}),
});

describe("stepFlow", () => {
  const parentAndTwo = { c0: [], c1: [], parent: ["c0", "c1"] };

  it("submits the nodes without dependencies first, then the parent once every child ended", () => {
    const first = stepFlow(flow(parentAndTwo), jobs({}), 1);
    expect(first.submit).toEqual(["c0", "c1"]);
    expect(first.record.nodes.parent?.status).toBe("waiting");
    expect(first.record.nodes.c0?.status).toBe("submitting");
    // One child ended, the other runs: the parent still waits.
    const second = stepFlow(first.record, jobs({ c0: ended("succeeded"), c1: { kind: "running" } }), 2);
    expect(second.submit).toEqual([]);
    expect(second.record.nodes.c1?.status).toBe("running");
    const third = stepFlow(second.record, jobs({ c1: ended("succeeded") }), 3);
    expect(third.submit).toEqual(["parent"]);
    const last = stepFlow(third.record, jobs({ parent: ended("succeeded") }), 4);
    expect(last.record.status).toBe("succeeded");
    expect(last.record.finishedAt).toBe(4);
    // Nothing new: the same record, not rewritten.
    expect(stepFlow(last.record, jobs({}), 5).record).toBe(last.record);
  });

  it("submits a node again whose submit left no job (a driver died, or it was rolled back)", () => {
    const first = stepFlow(flow({ a: [] }), jobs({}), 1);
    expect(stepFlow(first.record, jobs({ a: { kind: "none" } }), 2).submit).toEqual(["a"]);
    expect(stepFlow(first.record, jobs({ a: { kind: "pending" } }), 2).submit).toEqual([]);
  });

  it("leaves a node whose job it did not look at as the record says: submitted, running or cancelled, not again", () => {
    const first = stepFlow(flow({ a: [], b: [], parent: ["a", "b"] }), jobs({}), 1);
    // Only b's job changed: a, still being submitted, is neither submitted again nor taken as ended.
    const onlyB = stepFlow(first.record, (name) => (name === "b" ? ended("succeeded") : undefined), 2);
    expect(onlyB.submit).toEqual([]);
    expect(onlyB.record.nodes.a?.status).toBe("submitting");
    expect(onlyB.record.nodes.b?.status).toBe("succeeded");
    expect(onlyB.record.nodes.parent?.status).toBe("waiting");
    const running = stepFlow(onlyB.record, jobs({ a: { kind: "running" } }), 3).record;
    // A cancelled flow: the job not looked at is not cancelled by this step; its waiting parent is.
    const cancelled = stepFlow({ ...running, status: "cancelled" }, () => undefined, 4);
    expect(cancelled.cancel).toEqual([]);
    expect(cancelled.record.nodes.a?.status).toBe("running");
    expect(cancelled.record.nodes.parent?.status).toBe("cancelled");
    // Nothing looked at in a flow that has not moved: the same record.
    expect(stepFlow(running, () => undefined, 5).record).toBe(running);
  });

  it("under fail, a failed child skips the parent and every node after it, and fails the flow with its reason", () => {
    const chain = stepFlow(flow({ a: [], b: ["a"], c: ["b"] }), jobs({}), 1);
    const after = stepFlow(chain.record, jobs({ a: ended("failed", "3 of 3 tasks failed") }), 2);
    expect(after.submit).toEqual([]);
    expect(after.record.nodes.b).toMatchObject({ status: "skipped", reason: "dependency a failed" });
    expect(after.record.nodes.c).toMatchObject({ status: "skipped", reason: "dependency b skipped" });
    expect(after.record.status).toBe("failed");
    expect(after.record.reason).toBe("job a failed: 3 of 3 tasks failed");
  });

  it("under continue, the parent runs after a failed child and the flow's end is the parent's", () => {
    const first = stepFlow(flow(parentAndTwo, "continue"), jobs({}), 1);
    const second = stepFlow(first.record, jobs({ c0: ended("failed"), c1: ended("succeeded") }), 2);
    expect(second.submit).toEqual(["parent"]);
    expect(stepFlow(second.record, jobs({ parent: ended("succeeded") }), 3).record.status).toBe("succeeded");
    expect(stepFlow(second.record, jobs({ parent: ended("failed") }), 3).record.status).toBe("failed");
  });

  it("a cancelled flow submits nothing, cancels the jobs still running and ends every waiting node", () => {
    const first = stepFlow(flow(parentAndTwo), jobs({}), 1);
    const cancelled: FlowRecord = { ...first.record, status: "cancelled", reason: "enough" };
    const step = stepFlow(cancelled, jobs({ c0: { kind: "running" }, c1: { kind: "none" } }), 2);
    expect(step.submit).toEqual([]);
    expect(step.cancel).toEqual(["jc0"]);
    expect(step.record.nodes.c1?.status).toBe("cancelled");
    expect(step.record.nodes.parent?.status).toBe("cancelled");
    expect(step.record.status).toBe("cancelled");
    const done = stepFlow(step.record, jobs({ c0: ended("failed", "cancelled: flow cancelled") }), 3);
    expect(done.record.finishedAt).toBe(3);
    expect(done.record.reason).toBe("enough");
  });

  it("reads back what it writes; refuses another version", () => {
    const record = flow(parentAndTwo);
    expect(decodeFlowRecord(encodeFlowRecord(record))).toEqual(record);
    expect(() => decodeFlowRecord(JSON.stringify({ ...record, v: 2 }))).toThrow(/version 2/);
  });
});

describe("checkGraph", () => {
  const fieldOf = (nodes: Record<string, { dependsOn?: unknown }>) => {
    try {
      checkGraph(nodes);
      return undefined;
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidArgument);
      return (error as InvalidArgument).field;
    }
  };
  it("names the field of each bad graph", () => {
    expect(fieldOf({})).toBe("jobs");
    expect(fieldOf({ "a b": {} })).toBe("jobs.a b");
    expect(fieldOf({ a: { dependsOn: "b" } })).toBe("jobs.a.dependsOn");
    expect(fieldOf({ a: { dependsOn: ["a"] } })).toBe("jobs.a.dependsOn[0]");
    expect(fieldOf({ a: { dependsOn: ["b"] }, b: { dependsOn: ["c"] }, c: { dependsOn: ["a"] } })).toBe(
      "jobs.a.dependsOn",
    );
    expect(fieldOf({ a: {}, b: { dependsOn: ["a"] }, c: { dependsOn: ["a", "b"] } })).toBeUndefined();
  });

  it("takes no inherited name for a job: a dependency on one would never be ready", () => {
    for (const inherited of ["constructor", "toString", "hasOwnProperty", "__proto__"])
      expect(fieldOf({ a: { dependsOn: [inherited] } }), inherited).toBe("jobs.a.dependsOn[0]");
    // A job that is named so is its own (a plain object's key), but `__proto__` is never one.
    expect(fieldOf({ constructor: {}, a: { dependsOn: ["constructor"] } })).toBeUndefined();
    expect(fieldOf(JSON.parse('{"__proto__": {}}'))).toBe("jobs.__proto__");
  });
});

describe("a flow record's reasons as stored", () => {
  const bytes = (text: string) => Buffer.byteLength(text);
  const reasons = ["short", ...longTexts];

  it("are cut to 256 bytes as stored, and a cut one says how long it was; a short one is kept", () => {
    for (const reason of reasons) {
      const record: FlowRecord = {
        ...flow({ a: [] }),
        reason,
        nodes: { a: { ...(flow({ a: [] }).nodes.a as FlowRecord["nodes"][string]), reason } },
      };
      const stored = JSON.parse(encodeFlowRecord(record)) as FlowRecord;
      for (const kept of [stored.reason, stored.nodes.a?.reason] as string[]) {
        expect(bytes(JSON.stringify(kept)) - 2).toBeLessThanOrEqual(256);
        if (reason === "short") expect(kept).toBe("short");
        else expect(kept).toMatch(new RegExp(`… \\[cut from ${reason.length} characters\\]$`));
      }
    }
  });

  it("no end of a flow stores a record larger than its largest form", () => {
    const base = flow({ a: [], b: ["a"], c: ["a", "b"] });
    const largest = bytes(encodeFlowRecord(largestFlowRecord(base)));
    const statuses = ["succeeded", "failed", "skipped", "cancelled", "submitting", "running"] as const;
    for (const reason of [...reasons, undefined])
      for (const status of statuses)
        for (const flowStatus of ["succeeded", "failed", "cancelled"] as const) {
          const ended: FlowRecord = {
            ...base,
            status: flowStatus,
            finishedAt: base.updatedAt,
            ...(reason === undefined ? {} : { reason }),
            nodes: Object.fromEntries(
              Object.entries(base.nodes).map(([name, node]) => [
                name,
                { ...node, status, ...(reason === undefined ? {} : { reason }) },
              ]),
            ),
          };
          expect(bytes(encodeFlowRecord(ended))).toBeLessThanOrEqual(largest);
        }
  });
});
