import { describe, expect, it } from "vitest";
import { cancelJob } from "../../src/effects/finalize-job.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { fakeJobPort, laneRecord, record } from "./fake-job-port.ts";

describe("cancelJob", () => {
  it("ends a committed job as failed, counts kept as the larger, then removes its tasks", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "committed", status: "running", counts: { done: 5, failed: 0, dead: 2 } }));
    const cancelled = await cancelJob(fake.port, "j1", "user asked", { done: 3, failed: 1, dead: 2 }, 7000, {
      log: silentLogger(),
    });
    const stored = cancelled?.record;
    // With the revision it was written at: a reader orders it by that, not by its time.
    expect(cancelled?.revision).toBe(fake.records.get("j1")!.revision);
    const expected = {
      phase: "committed",
      status: "failed",
      counts: { done: 5, failed: 1, dead: 2 },
      reason: "cancelled: user asked",
      updatedAt: 7000,
      finishedAt: 7000,
    };
    expect(stored).toMatchObject(expected);
    expect(fake.records.get("j1")!.record).toMatchObject(expected);
    expect(fake.calls).toEqual([
      "getRecord j1",
      "tasksMark q j1",
      "updateRecord j1 committed failed",
      "removeTasks q j1",
    ]);
  });

  it("a supervisor's end written between its read and its write: that end, at its own revision", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "committed", status: "running" }));
    const ended = record({ phase: "committed", status: "succeeded", reason: undefined, updatedAt: 6000 });
    // The compare-and-set conflicts: the supervisor wrote the end after the cancel's read.
    fake.failNext("updateRecord", () => fake.put(ended));
    const cancelled = await cancelJob(fake.port, "j1", "late", { done: 0, failed: 0, dead: 0 }, 7000, {
      log: silentLogger(),
    });
    expect(cancelled?.record).toEqual(ended);
    // A reader that heard that end drops a record at a revision below it as older news.
    expect(cancelled?.revision).toBe(fake.records.get("j1")!.revision);
  });

  it("removes a lane job's task from its lane", async () => {
    const fake = fakeJobPort();
    fake.put(laneRecord({ phase: "committed", status: "running" }));
    await cancelJob(fake.port, "j1", "user asked", { done: 0, failed: 0, dead: 0 }, 7000, {
      log: silentLogger(),
    });
    expect(fake.calls.at(-1)).toBe("removeTasks q j1 lane");
  });

  it("leaves an end already recorded as it is, and still removes the tasks", async () => {
    const fake = fakeJobPort();
    const ended = record({ phase: "committed", status: "succeeded", reason: undefined, updatedAt: 5000 });
    fake.put(ended);
    const stored = (
      await cancelJob(fake.port, "j1", "late", { done: 9, failed: 9, dead: 9 }, 7000, { log: silentLogger() })
    )?.record;
    expect(stored).toEqual(ended);
    expect(fake.records.get("j1")!.record).toEqual(ended);
    expect(fake.calls).toEqual(["getRecord j1", "tasksMark q j1", "removeTasks q j1"]);
  });

  it("writes nothing and removes nothing for a submit not committed", async () => {
    for (const phase of ["submitting", "rolledBack"] as const) {
      const fake = fakeJobPort();
      const open = record({ phase, status: "queuing" });
      fake.put(open);
      const stored = (
        await cancelJob(fake.port, "j1", "why", { done: 1, failed: 0, dead: 0 }, 7000, {
          log: silentLogger(),
        })
      )?.record;
      expect(stored).toEqual(open);
      expect(fake.records.get("j1")!.record).toEqual(open);
      expect(fake.calls).toEqual(["getRecord j1"]);
    }
  });

  it("gives undefined and touches nothing for a job with no record", async () => {
    const fake = fakeJobPort();
    expect(
      await cancelJob(fake.port, "nope", "why", { done: 0, failed: 0, dead: 0 }, 7000, {
        log: silentLogger(),
      }),
    ).toBeUndefined();
    expect(fake.calls).toEqual(["getRecord nope"]);
  });
});
