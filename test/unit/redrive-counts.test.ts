/**
 * The counts a supervisor writes onto a job a redrive lowered (its dead
 * count): the progress write tried again after a conflict with the
 * redrive's write takes the counts as they are by then, and a redriven
 * job's dead count is the supervisor's own, lower too, in its progress and
 * its end. The oracle is the fake port's store, read back raw.
 * test/integration/redrive-progress-race.both.test.ts runs the race on both
 * brokers.
 */
import { describe, expect, it } from "vitest";
import { finalizeJob } from "../../src/effects/finalize-job.ts";
import { type RecordSeen, recordProgress } from "../../src/effects/record-updates.ts";
import type { JobCounts } from "../../src/kernel/job-record.ts";
import { fakeJobPort, record } from "./fake-job-port.ts";

const running = (counts: JobCounts, redrive?: string) =>
  record({ status: "running", phase: "committed", total: 3, counts, ...(redrive ? { redrive } : {}) });

describe("counts written onto a redriven job", () => {
  it("a progress write tried again after the redrive's write takes the counts counted by then", async () => {
    const fake = fakeJobPort();
    const written = running({ done: 0, failed: 0, dead: 1 });
    const seen: RecordSeen = { last: { record: written, revision: fake.put(written) } };
    fake.put(running({ done: 0, failed: 0, dead: 0 }, "r1")); // the redrive's write
    // Planned with task 0 dead; the redrive's marker counted before the try after the conflict.
    const counted = [
      { done: 1, failed: 0, dead: 1 },
      { done: 1, failed: 0, dead: 0 },
    ];
    let reads = 0;
    const counts = () => counted[Math.min(reads++, counted.length - 1)] as JobCounts;
    await recordProgress(fake.port, "j1", "running", counts, 50, seen);
    expect(fake.records.get("j1")!.record).toMatchObject({
      counts: { done: 1, failed: 0, dead: 0 },
      redrive: "r1",
    });
    expect(reads).toBe(2); // once a try
  });

  it("a redriven job's progress takes its dead count from the supervisor, lower too; done and failed never go down", async () => {
    const fake = fakeJobPort();
    // A write from before the marker was counted put task 0 back: the next one takes it off.
    fake.put(running({ done: 2, failed: 1, dead: 1 }, "r1"));
    await recordProgress(fake.port, "j1", "running", { done: 1, failed: 0, dead: 0 }, 50);
    expect(fake.records.get("j1")!.record.counts).toEqual({ done: 2, failed: 1, dead: 0 });
    // Never redriven: no count goes down (a write planned earlier may land later).
    fake.put(running({ done: 2, failed: 1, dead: 1 }));
    await recordProgress(fake.port, "j1", "running", { done: 1, failed: 0, dead: 0 }, 60);
    expect(fake.records.get("j1")!.record.counts).toEqual({ done: 2, failed: 1, dead: 1 });
  });

  it("a redriven job's end takes its dead count from the supervisor", async () => {
    const fake = fakeJobPort();
    fake.put(running({ done: 2, failed: 0, dead: 1 }, "r1"));
    const counts = { done: 3, failed: 0, dead: 0 };
    await finalizeJob(
      fake.port,
      { jobId: "j1", queue: "q", status: "succeeded", reason: null, counts },
      () => 70,
    );
    expect(fake.records.get("j1")!.record).toMatchObject({ status: "succeeded", counts });
  });

  it("an end decided before a redrive's marker was counted is not written, nor cleaned up", async () => {
    const fake = fakeJobPort();
    // The redrive read the job running and reopened it: its task is on its way to the workers.
    const reopened = running({ done: 1, failed: 0, dead: 0 }, "r2");
    fake.put(reopened);
    const end = {
      jobId: "j1",
      queue: "q",
      status: "failed",
      reason: "1 of 2",
      counts: { done: 1, failed: 0, dead: 1 },
    } as const;
    const notR2 = (redrive: string) => redrive === "r1";
    const stored = await finalizeJob(fake.port, end, () => 80, undefined, undefined, notR2);
    expect(stored).toMatchObject({ status: "running", redrive: "r2" });
    expect(fake.records.get("j1")!.record).toEqual(reopened);
    expect(fake.calls.filter((c) => c.startsWith("updateRecord") || c.startsWith("removeTasks"))).toEqual([]);
    // Its marker counted, the end decided again is written (and the job cleaned up).
    const counts = { done: 2, failed: 0, dead: 0 };
    await finalizeJob(
      fake.port,
      { ...end, status: "succeeded", reason: null, counts },
      () => 90,
      undefined,
      undefined,
      (r) => r === "r2",
    );
    expect(fake.records.get("j1")!.record).toMatchObject({ status: "succeeded", counts, redrive: "r2" });
    expect(fake.calls.filter((c) => c.startsWith("removeTasks"))).toHaveLength(1);
  });
});
