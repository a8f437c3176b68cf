/**
 * A job's record made again by another submit of its key (the server's store
 * came back empty, the key was submitted again): no write of the lost job's
 * runtime changes it, and nothing of the new job is cleaned up. The oracle is
 * the fake port's store and its log of calls, not the writers' answers.
 */
import { describe, expect, it } from "vitest";
import { cancelJob, finalizeJob } from "../../src/effects/finalize-job.ts";
import { lostReason, recordLost } from "../../src/effects/lost-job.ts";
import { recordProgress } from "../../src/effects/record-updates.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { fakeJobPort, laneRecord, record } from "./fake-job-port.ts";

/** The new job's record: committed by submit `s2`, two answers counted. */
const newJob = (lane: boolean) =>
  (lane ? laneRecord : record)({
    phase: "committed",
    status: "running",
    submitId: "s2",
    counts: { done: 2, failed: 0, dead: 0 },
  });

const lost = { done: 4, failed: 0, dead: 0 };
const writes = (calls: readonly string[]) =>
  calls.filter(
    (c) => c.startsWith("updateRecord") || c.startsWith("createRecord") || c.startsWith("removeTasks"),
  );

/**
 * Runs `act` (a write of the lost job, submit `s1`) against a store that holds `made`, another
 * submit's record: that record is left as made, nothing is written or removed. What `act`
 * answered, for the case to check.
 */
const leftAsMade = async <A>(
  made: JobRecord,
  act: (port: ReturnType<typeof fakeJobPort>["port"]) => Promise<A>,
  setUp?: (fake: ReturnType<typeof fakeJobPort>) => void,
): Promise<A> => {
  const fake = fakeJobPort();
  fake.put(made);
  setUp?.(fake);
  const answer = await act(fake.port);
  expect(fake.records.get("j1")!.record).toEqual(made);
  expect(writes(fake.calls)).toEqual([]);
  return answer;
};

describe("a record another submit made again", () => {
  for (const lane of [false, true])
    describe(lane ? "lane job" : "job with its own consumer", () => {
      const made = newJob(lane);

      it("the lost job's end writes nothing onto it and cleans nothing up", async () => {
        const end = { jobId: "j1", queue: "q", status: "succeeded", reason: null, counts: lost } as const;
        const stored = await leftAsMade(made, (port) =>
          finalizeJob(port, end, () => 9000, { submit: "s1" }, record({ phase: "committed" })),
        );
        expect(stored).toEqual(made);
      });

      it("the lost job's progress writes nothing onto it", async () => {
        await leftAsMade(made, (port) => recordProgress(port, "j1", "running", lost, 9000, { submit: "s1" }));
      });

      it("a cancel from a handle of the lost job writes nothing and cleans nothing up", async () => {
        const stored = await leftAsMade(made, (port) =>
          cancelJob(port, "j1", "stale", lost, 9000, { log: silentLogger(), submit: "s1" }),
        );
        expect(stored?.record).toEqual(made);
      });

      it("the lost job's tasks-lost end writes nothing onto it", async () => {
        const stored = await leftAsMade(made, (port) =>
          recordLost(port, record({ phase: "committed" }), lost, "tasks lost", 9000),
        );
        expect(stored).toEqual(made);
      });
    });

  it("a cancel from a handle of the lost job does not write the commit of a 1-task lane job made again", async () => {
    // Its task stored, its commit not written yet: a reader takes it as committed.
    const made = laneRecord({ submitId: "s2" });
    const stored = await leftAsMade(
      made,
      (port) => cancelJob(port, "j1", "stale", lost, 9000, { log: silentLogger(), submit: "s1" }),
      (fake) => fake.tasks.set("j1", ['{"i":0,"p":1}']),
    );
    expect(stored?.record).toEqual(made);
  });

  it("the lost job's lost-task check names the job made again, and restores nothing of it", async () => {
    const fake = fakeJobPort();
    fake.put(newJob(false));
    const reason = await lostReason(fake.port, record({ phase: "committed", status: "stalled" }), 9000);
    expect(reason).toMatch(/submitted again \(submit s2\)/);
    expect(fake.calls.filter((c) => c.startsWith("restoreConsumer"))).toEqual([]);
  });

  it("its own submit's record is written as before", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "committed", status: "running" }));
    await recordProgress(fake.port, "j1", "running", lost, 9000, { submit: "s1" });
    expect(fake.records.get("j1")!.record.counts).toEqual(lost);
    await cancelJob(fake.port, "j1", "asked", lost, 9100, { log: silentLogger(), submit: "s1" });
    expect(fake.records.get("j1")!.record).toMatchObject({ status: "failed", reason: "cancelled: asked" });
    expect(fake.calls.at(-1)).toBe("removeTasks q j1");
  });
});
