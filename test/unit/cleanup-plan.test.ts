/**
 * What cleanup may touch, from the job records alone (planCleanup), and the
 * job record helpers it rests on: final statuses, the record's version
 * check, the tolerance rule. Expected values are written out by hand.
 */
import { describe, expect, it } from "vitest";
import { jobIdOfSubject, planCleanup } from "../../src/kernel/cleanup-plan.ts";
import { answered, isFinal, type JobRecord, withinTolerance } from "../../src/kernel/job-record.ts";
import { decodeRecord, encodeRecord } from "../../src/kernel/job-record-codec.ts";
import { record } from "./fake-job-port.ts";

const job = (id: string, overrides: Partial<JobRecord> = {}) => record({ id, ...overrides });

describe("planCleanup", () => {
  const records = [
    job("running", { status: "running", phase: "committed", updatedAt: 0 }),
    job("submitting", { status: "failed", phase: "submitting", updatedAt: 0 }),
    job("doneOld", { status: "succeeded", phase: "committed", updatedAt: 50, finishedAt: 100 }),
    job("doneEdge", { status: "failed", phase: "rolledBack", updatedAt: 400, finishedAt: 0 }),
    job("doneNew", { status: "failed", phase: "committed", updatedAt: 0, finishedAt: 901 }),
    job("noFinish", { status: "succeeded", phase: "committed", updatedAt: 900 }),
  ];
  // Retention 100 at now 1000: finished at or before 900 has expired. Planned inside each test,
  // not when the file loads, so that the code runs while the test does.
  const planned = () => planCleanup(records, 100, 1000);

  it("a job is over when it has no record or a final one that left the submit", () => {
    const plan = planned();
    expect(plan.over("unknown")).toBe(true);
    expect(plan.over("running")).toBe(false);
    // A submit still in progress is the reaper's, even with a final status.
    expect(plan.over("submitting")).toBe(false);
    expect(plan.over("doneOld")).toBe(true);
    expect(plan.over("doneEdge")).toBe(true);
    expect(plan.over("doneNew")).toBe(true);
  });

  it("a finished job expires retention after it finished (or was last updated), boundary included", () => {
    const plan = planned();
    // doneEdge finished at 0 (finishedAt wins over updatedAt 400); noFinish has only updatedAt 900.
    expect(plan.expired.map((r) => r.id)).toEqual(["doneOld", "doneEdge", "noFinish"]);
  });

  it("results go for a job without a record or with an expired one", () => {
    const plan = planned();
    expect(plan.resultsGone("unknown")).toBe(true);
    expect(plan.resultsGone("doneOld")).toBe(true);
    expect(plan.resultsGone("doneNew")).toBe(false);
    expect(plan.resultsGone("running")).toBe(false);
    expect(plan.records.get("running")?.status).toBe("running");
    expect(plan.records.size).toBe(6);
  });

  it("jobIdOfSubject is the last token", () => {
    expect(jobIdOfSubject("js.tasks.images.j123")).toBe("j123");
    expect(jobIdOfSubject("js.results.k9")).toBe("k9");
    expect(jobIdOfSubject("plain")).toBe("plain");
  });
});

describe("job record", () => {
  it("only succeeded and failed are final", () => {
    expect(["queuing", "running", "stalled", "succeeded", "failed"].map((s) => isFinal(s as never))).toEqual([
      false,
      false,
      false,
      true,
      true,
    ]);
  });

  it("round-trips through JSON and refuses any version but 1", () => {
    const r = job("j", { status: "running" });
    expect(decodeRecord(encodeRecord(r))).toEqual(r);
    expect(() => decodeRecord('{"v":2,"id":"j"}')).toThrow("unsupported job record version 2");
    expect(() => decodeRecord('{"id":"j"}')).toThrow("unsupported job record version undefined");
  });

  it("refuses a version 1 record with a field missing or mistyped, and keeps fields it does not know", () => {
    const r = job("j", { status: "running" });
    const { counts: _, ...withoutCounts } = r;
    expect(() => decodeRecord(JSON.stringify(withoutCounts))).toThrow(
      "job record j is unreadable: counts: is required",
    );
    expect(() => decodeRecord(JSON.stringify({ ...r, status: "lost" }))).toThrow(
      "job record j is unreadable: status:",
    );
    expect(decodeRecord(JSON.stringify({ ...r, later: 1 }))).toEqual({ ...r, later: 1 });
  });

  it("answered counts every kind of answer", () => {
    expect(answered({ done: 3, failed: 2, dead: 1 })).toBe(6);
  });

  it("withinTolerance: failed plus dead may be at most the tolerated share, rounded down", () => {
    // 10 % of 10 tasks: 1 may fail.
    expect(withinTolerance({ done: 9, failed: 1, dead: 0 }, 10, 0.1)).toBe(true);
    expect(withinTolerance({ done: 8, failed: 1, dead: 1 }, 10, 0.1)).toBe(false);
    // 0.57 × 100 is 56.99999999999999 in floating point: still 57 tasks.
    expect(withinTolerance({ done: 43, failed: 50, dead: 7 }, 100, 0.57)).toBe(true);
    expect(withinTolerance({ done: 42, failed: 50, dead: 8 }, 100, 0.57)).toBe(false);
    // 34 % of 3 is 1.02: 1 task.
    expect(withinTolerance({ done: 1, failed: 1, dead: 1 }, 3, 0.34)).toBe(false);
    expect(withinTolerance({ done: 3, failed: 0, dead: 0 }, 3, 0)).toBe(true);
  });
});
