/**
 * The job effects on a fake port whose store is read back raw: the atomic
 * submit (record, tasks, consumer = commit point, committed record, then the
 * announcement), its rollback, the reaper that finishes dead submits, and
 * the compare-and-set record updates behind progress and finalize; for a
 * lane job, whose task's publish is the commit point, the same.
 */
import { Effect } from "effect";
import { describe, expect, it } from "vitest";
import { cancelJob, committedRecord, finalizeJob } from "../../src/effects/finalize-job.ts";
import { lostReason } from "../../src/effects/lost-job.ts";
import { reapSubmits } from "../../src/effects/reap-submits.ts";
import { type RecordSeen, recordProgress, updateRecordWith } from "../../src/effects/record-updates.ts";
import { SimulatedCrash, SubmitStep, submitJob } from "../../src/effects/submit-job.ts";
import { rollBack, rollBackLaneEffect } from "../../src/effects/submit-undo.ts";
import { RevisionConflict, TransientBrokerError } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { fakeJobPort, laneRecord, record } from "./fake-job-port.ts";

const clock = (start: number) => {
  let t = start;
  return { now: () => t, set: (v: number) => (t = v) };
};

const rejection = async (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    () => {
      throw new Error("expected a rejection");
    },
    (error: unknown) => error,
  );

describe("submitJob", () => {
  it("writes the record, the tasks, the consumer, the committed record, then announces, in that order", async () => {
    const fake = fakeJobPort();
    const steps: string[] = [];
    const outcome = await submitJob(fake.port, {
      record: record(),
      bodies: ['{"i":0,"p":1}', '{"i":1,"p":2}'],
      now: () => 5000,
      signal: new AbortController().signal,
      hooks: { afterStep: (step) => void steps.push(step) },
    });
    expect(fake.calls).toEqual([
      "createRecord j1",
      "publishTasks j1 2",
      "createConsumer q j1",
      "updateRecord j1 committed running",
      "announceCreated q j1",
    ]);
    expect(steps).toEqual([
      SubmitStep.recordCreated,
      SubmitStep.tasksPublished,
      SubmitStep.consumerCreated,
      SubmitStep.recordCommitted,
    ]);
    const stored = fake.records.get("j1")!.record;
    expect(stored).toMatchObject({ phase: "committed", status: "running", updatedAt: 5000, createdAt: 1000 });
    expect(outcome).toEqual({ kind: "committed", record: stored });
    expect(fake.tasks.get("j1")).toEqual(['{"i":0,"p":1}', '{"i":1,"p":2}']);
  });

  it("a lane job: record, its task (the commit point); no commit write, no consumer, no announcement", async () => {
    const fake = fakeJobPort();
    const steps: string[] = [];
    const seen: RecordSeen = {};
    const outcome = await submitJob(fake.port, {
      record: laneRecord(),
      bodies: ['{"i":0,"p":1}'],
      now: () => 5000,
      signal: new AbortController().signal,
      hooks: { afterStep: (step) => void steps.push(step) },
      seen,
    });
    expect(fake.calls).toEqual(["createRecord j1", "publishTasks j1 1"]);
    expect(steps).toEqual([SubmitStep.recordCreated, SubmitStep.tasksPublished]);
    expect(outcome).toMatchObject({ kind: "committed", record: { lane: true, phase: "committed" } });
    // Stored as created; the job's next write starts from the create's revision, as committed.
    const stored = fake.records.get("j1")!;
    expect(stored.record).toMatchObject({ phase: "submitting", status: "queuing" });
    expect(seen.last).toEqual({
      record: outcome.kind === "committed" && outcome.record,
      revision: stored.revision,
    });
    expect(seen.laneSubmit).toBe(stored.record.submitId);
    expect(fake.consumers.size).toBe(0);
  });

  it("a lane job's next write carries its commit: its end, or a progress write with nothing new", async () => {
    for (const write of ["end", "progress"] as const) {
      const fake = fakeJobPort();
      const seen: RecordSeen = {};
      await submitJob(fake.port, {
        record: laneRecord(),
        bodies: ["a"],
        now: () => 5000,
        signal: new AbortController().signal,
        seen,
      });
      const created = fake.records.get("j1")!.revision;
      if (write === "end")
        await finalizeJob(
          fake.port,
          {
            jobId: "j1",
            queue: "q",
            status: "succeeded",
            reason: null,
            counts: { done: 1, failed: 0, dead: 0 },
          },
          () => 5007,
          seen,
        );
      else await recordProgress(fake.port, "j1", "running", { done: 0, failed: 0, dead: 0 }, 6000, seen);
      const stored = fake.records.get("j1")!;
      expect(stored.revision).toBe(created + 1);
      // Written from what the submit took, at the create's revision: no read.
      expect(
        fake.calls.filter((c) => c.startsWith("getRecord")),
        write,
      ).toEqual([]);
      // What the submit took was never written: no watch shows it, so it is not kept as `before`.
      expect(seen.before, write).toBeUndefined();
      expect(stored.record).toMatchObject(
        write === "end"
          ? { phase: "committed", status: "succeeded", counts: { done: 1 } }
          : { phase: "committed", status: "running", counts: { done: 0 } },
      );
    }
  });

  it("the lease asked for beside the record is waited for before the commit: no task before it", async () => {
    const fake = fakeJobPort();
    let grant!: (held: boolean) => void;
    const leased = new Promise<boolean>((resolve) => (grant = resolve));
    const submitted = submitJob(fake.port, {
      record: laneRecord(),
      bodies: ['{"i":0,"p":1}'],
      now: () => 5000,
      signal: new AbortController().signal,
      leased,
    });
    for (let k = 0; k < 20; k++) await Promise.resolve();
    await new Promise((resolve) => setTimeout(resolve, 5));
    // The record's create does not wait for the lease; the task, the commit point, does.
    expect(fake.calls).toEqual(["createRecord j1"]);
    grant(true);
    expect((await submitted).kind).toBe("committed");
    expect(fake.calls).toEqual(["createRecord j1", "publishTasks j1 1"]);
  });

  it("a lease that fails rolls the submit back before any task: its error is the submit's", async () => {
    const fake = fakeJobPort();
    const refused = new Error("leases bucket refused the write");
    const error = await rejection(
      submitJob(fake.port, {
        record: record(),
        bodies: ["a"],
        now: () => 7,
        signal: new AbortController().signal,
        leased: Promise.reject(refused),
      }),
    );
    expect(error).toBe(refused);
    expect(fake.calls).not.toContain("publishTasks j1 1");
    expect(fake.tasks.get("j1") ?? []).toEqual([]);
    expect(fake.records.get("j1")!.record).toMatchObject({
      phase: "rolledBack",
      reason: "submit failed: leases bucket refused the write",
    });
  });

  it("hooks without afterStep are fine; a simulated crash is named as such", async () => {
    const fake = fakeJobPort();
    const outcome = await submitJob(fake.port, {
      record: record(),
      bodies: ["a"],
      now: () => 7,
      signal: new AbortController().signal,
      hooks: {},
    });
    expect(outcome.kind).toBe("committed");
    expect(new SimulatedCrash("x").name).toBe("SimulatedCrash");
  });

  it("a submit of the same key still in flight is waited for, and its commit returned", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "submitting", commitDeadline: 1000, submitId: "first" }));
    // The other submit commits while this one waits.
    fake.failNext("createRecord", () => undefined);
    fake.failNext("createRecord", () =>
      fake.put(record({ phase: "committed", status: "running", submitId: "first" })),
    );
    const outcome = await submitJob(fake.port, {
      record: record({ submitId: "second" }),
      bodies: ["a"],
      now: () => 500,
      signal: new AbortController().signal,
    });
    expect(outcome).toMatchObject({
      kind: "existing",
      found: { record: { submitId: "first", phase: "committed" } },
    });
    expect(fake.calls).toEqual(["createRecord j1", "getRecord j1", "createRecord j1", "getRecord j1"]);
  });

  it("a failed announcement does not undo a committed submit", async () => {
    const fake = fakeJobPort();
    fake.failNext("announceCreated", () => {
      throw new Error("core publish failed");
    });
    const outcome = await submitJob(fake.port, {
      record: record(),
      bodies: ["a", "b"],
      now: () => 5000,
      signal: new AbortController().signal,
    });
    expect(outcome.kind).toBe("committed");
    expect(fake.records.get("j1")!.record.phase).toBe("committed");
  });

  it("refuses to commit after its deadline: rolled back, with the reason in the record", async () => {
    const fake = fakeJobPort();
    const time = clock(1000);
    const error = await rejection(
      submitJob(fake.port, {
        record: record({ commitDeadline: 2000 }),
        bodies: ["a", "b"],
        now: time.now,
        signal: new AbortController().signal,
        hooks: { afterStep: (step) => void (step === "tasksPublished" && time.set(2001)) },
      }),
    );
    expect((error as Error).message).toBe("submit of 2 tasks passed its commit deadline; rolled back");
    expect(fake.consumers.has("j1")).toBe(false);
    expect(fake.tasks.has("j1")).toBe(false);
    expect(fake.records.get("j1")!.record).toMatchObject({
      phase: "rolledBack",
      status: "failed",
      reason: "submit failed: submit of 2 tasks passed its commit deadline; rolled back",
      updatedAt: 2001,
      finishedAt: 2001,
    });
  });

  it("a lane job whose task was stored after its deadline commits: the publish was its commit point", async () => {
    // A worker may have run its task already: a rollback now would tell the caller it failed.
    const fake = fakeJobPort();
    const time = clock(1000);
    const outcome = await submitJob(fake.port, {
      record: laneRecord({ commitDeadline: 2000 }),
      bodies: ["a"],
      now: time.now,
      signal: new AbortController().signal,
      hooks: { afterStep: (step) => void (step === "tasksPublished" && time.set(2001)) },
    });
    expect(outcome.kind).toBe("committed");
    expect(fake.tasks.get("j1")).toEqual(["a"]);
    // Not rolled back: its commit is written with its next write.
    expect(fake.records.get("j1")!.record).toMatchObject({ phase: "submitting" });
    expect(fake.calls.filter((c) => c.startsWith("removeTasks"))).toEqual([]);
  });

  // The publish waited (a connection down) past the deadline and the reaper's grace: the reaper
  // found no task and marks the submit rolled back, before the submitter reads its record, or
  // between that read and its commit's write. Either way the mark wins, and the submit fails.
  for (const markBefore of ["read", "commit"] as const)
    it(`a 1-task lane job whose late publish meets the reaper's mark (before its ${markBefore}) fails, its late task removed`, async () => {
      const fake = fakeJobPort();
      const time = clock(1000);
      const mark = () => {
        const { record: stored } = fake.records.get("j1")!;
        fake.put({ ...stored, phase: "rolledBack", status: "failed", reason: "rolled back by the reaper" });
      };
      fake.failNext("publishTasks", () => {
        time.set(12_500);
        if (markBefore === "read") mark();
        fake.tasks.set("j1", ["a"]);
      });
      if (markBefore === "commit") fake.failNext("updateRecord", mark);
      const error = await rejection(
        submitJob(fake.port, {
          record: laneRecord({ commitDeadline: 2000 }),
          bodies: ["a"],
          now: time.now,
          signal: new AbortController().signal,
        }),
      );
      expect((error as Error).message).toMatch(/rolled back/);
      expect(fake.records.get("j1")!.record).toMatchObject({ phase: "rolledBack", status: "failed" });
      expect(fake.tasks.has("j1")).toBe(false);
    });

  it("a 1-task lane job whose publish is answered past its deadline writes its commit at once, not with its next write", async () => {
    // The reaper's rollback is a compare-and-set on the create's revision: written now, the commit
    // makes that mark fail; left for the job's next write, the mark could land after this check.
    const fake = fakeJobPort();
    const time = clock(1000);
    fake.failNext("publishTasks", () => void time.set(2500));
    const outcome = await submitJob(fake.port, {
      record: laneRecord({ commitDeadline: 2000 }),
      bodies: ["a"],
      now: time.now,
      signal: new AbortController().signal,
    });
    expect(outcome).toMatchObject({ kind: "committed", record: { phase: "committed" } });
    expect(fake.records.get("j1")!.record).toMatchObject({ phase: "committed", status: "running" });
    expect(fake.tasks.get("j1")).toEqual(["a"]);
  });

  it("a lane job past its deadline before its publish is rolled back, nothing published", async () => {
    const fake = fakeJobPort();
    const time = clock(1000);
    const error = await rejection(
      submitJob(fake.port, {
        record: laneRecord({ commitDeadline: 2000 }),
        bodies: ["a"],
        now: time.now,
        signal: new AbortController().signal,
        hooks: { afterStep: (step) => void (step === "recordCreated" && time.set(2001)) },
      }),
    );
    expect((error as Error).message).toBe("submit of 1 tasks passed its commit deadline; rolled back");
    expect(fake.calls.filter((c) => c.startsWith("publishTasks"))).toEqual([]);
    expect(fake.records.get("j1")!.record).toMatchObject({ phase: "rolledBack", status: "failed" });
  });

  // Its task stored is a 1-task lane job's commit point: a worker may have run it already (it takes
  // a `submitting` 1-task lane record whose task is stored for committed). Rolled back, the job
  // would say failed over a task that ran, and a resubmit of its key would run it again.
  for (const takeover of [true, false])
    it(`a 1-task lane job whose publish was stored, its answer lost, ${takeover ? "and a takeover committed it meanwhile" : "with nobody to commit it meanwhile"}, stands committed, its task kept`, async () => {
      const fake = fakeJobPort();
      const seen: RecordSeen = {};
      fake.failNext("publishTasks", () => {
        // Stored on the server; the answer never comes (and another runtime's takeover finds the
        // task and writes the commit before the submitter gives up).
        fake.tasks.set("j1", ["a"]);
        const { record: stored } = fake.records.get("j1")!;
        if (takeover) fake.put({ ...stored, phase: "committed", status: "running", updatedAt: 1500 });
        throw new Error("no answer from the server");
      });
      const outcome = await submitJob(fake.port, {
        record: laneRecord(),
        bodies: ["a"],
        now: () => 1000,
        signal: new AbortController().signal,
        seen,
      });
      expect(outcome).toMatchObject({ kind: "committed", record: { phase: "committed", status: "running" } });
      expect(fake.records.get("j1")!.record).toMatchObject({ phase: "committed", status: "running" });
      expect(fake.tasks.get("j1")).toEqual(["a"]);
      expect(fake.calls.filter((c) => c.startsWith("removeTasks"))).toEqual([]);
      expect(seen.last?.revision).toBe(fake.records.get("j1")!.revision);
    });

  it("a lane job whose publish failed is marked rolled back, then its task removed", async () => {
    const fake = fakeJobPort();
    fake.failNext("publishTasks", () => {
      throw new Error("no answer from the server");
    });
    await expect(
      submitJob(fake.port, {
        record: laneRecord(),
        bodies: ["a"],
        now: () => 1000,
        signal: new AbortController().signal,
      }),
    ).rejects.toThrow(/no answer/);
    expect(fake.records.get("j1")!.record).toMatchObject({ phase: "rolledBack", status: "failed" });
    expect(fake.calls.at(-1)).toBe("removeTasks q j1 lane");
  });

  it("commits at the deadline itself", async () => {
    const fake = fakeJobPort();
    const outcome = await submitJob(fake.port, {
      record: record({ commitDeadline: 2000 }),
      bodies: ["a", "b"],
      now: () => 2000,
      signal: new AbortController().signal,
    });
    expect(outcome.kind).toBe("committed");
  });

  it("a failing step rolls back and rethrows the error; a non-Error is stated as text", async () => {
    const fake = fakeJobPort();
    fake.failNext("createConsumer", () => {
      throw "consumer limit";
    });
    const error = await rejection(
      submitJob(fake.port, {
        record: record(),
        bodies: ["a"],
        now: () => 7,
        signal: new AbortController().signal,
      }),
    );
    expect(error).toBe("consumer limit");
    expect(fake.records.get("j1")!.record).toMatchObject({
      phase: "rolledBack",
      reason: "submit failed: consumer limit",
    });
    expect(fake.calls).toContain("removeTasks q j1");
  });

  it("a commit write stored though its answer was lost stands: the submit answers committed, its tasks kept", async () => {
    // Before: rolled back (the tasks and consumer of the committed job removed), then, with the
    // rollback reading the record first, the job left running while the submit failed (from a
    // review): a caller retrying without a key made a duplicate.
    const fake = fakeJobPort();
    const update = fake.port.updateRecord;
    (fake.port as { updateRecord: typeof update }).updateRecord = async (r, revision) => {
      const written = await update(r, revision);
      if (r.phase === "committed") throw new TransientBrokerError({ message: "no answer", operation: "t" });
      return written;
    };
    const outcome = await submitJob(fake.port, {
      record: record(),
      bodies: ['{"i":0,"p":1}'],
      now: () => 5000,
      signal: new AbortController().signal,
    });
    const stored = fake.records.get("j1")!.record;
    expect(stored).toMatchObject({ phase: "committed", status: "running" });
    expect(outcome).toEqual({ kind: "committed", record: stored });
    expect(fake.calls).not.toContain("removeTasks q j1");
    expect(fake.consumers.has("j1")).toBe(true);
    expect(fake.tasks.get("j1")).toEqual(['{"i":0,"p":1}']);
  });

  it("a simulated crash leaves everything as it was, for the reaper", async () => {
    const fake = fakeJobPort();
    const error = await rejection(
      submitJob(fake.port, {
        record: record(),
        bodies: ["a"],
        now: () => 7,
        signal: new AbortController().signal,
        hooks: {
          afterStep: (step) => {
            if (step === "tasksPublished") throw new SimulatedCrash("killed");
          },
        },
      }),
    );
    expect(error).toBeInstanceOf(SimulatedCrash);
    expect(fake.records.get("j1")!.record.phase).toBe("submitting");
    expect(fake.tasks.get("j1")).toEqual(["a"]);
    expect(fake.calls).not.toContain("removeTasks q j1");
  });

  it("an idempotency key naming a committed job returns it and writes nothing", async () => {
    const fake = fakeJobPort();
    const existing = record({ phase: "committed", status: "running", submitId: "old" });
    fake.put(existing);
    const outcome = await submitJob(fake.port, {
      record: record({ submitId: "new" }),
      bodies: ["a"],
      now: () => 7,
      signal: new AbortController().signal,
    });
    expect(outcome).toEqual({
      kind: "existing",
      found: { record: existing, revision: fake.records.get("j1")!.revision },
    });
    expect(fake.calls).toEqual(["createRecord j1", "getRecord j1"]);
  });

  it("takes over a record left by a rolled-back submit", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "rolledBack", status: "failed", submitId: "old" }));
    const outcome = await submitJob(fake.port, {
      record: record({ submitId: "new" }),
      bodies: ["a"],
      now: () => 7,
      signal: new AbortController().signal,
    });
    expect(outcome.kind).toBe("committed");
    expect(fake.records.get("j1")!.record).toMatchObject({ submitId: "new", phase: "committed" });
  });

  it("takes over a record rolled back after waiting past its own deadline: its deadline counts from the take-over", async () => {
    const fake = fakeJobPort();
    // Planned at 1000 (deadline 31,000); the submit of the key in flight before it is rolled
    // back only at 40,000, after this one waited for it.
    fake.put(record({ phase: "submitting", commitDeadline: 5000, submitId: "dead" }));
    const time = clock(1000);
    fake.failNext("createRecord", () => undefined);
    fake.failNext("createRecord", () => {
      time.set(40_000);
      fake.put(record({ phase: "rolledBack", status: "failed", submitId: "dead" }));
    });
    const outcome = await submitJob(fake.port, {
      record: record({ submitId: "waiting" }),
      bodies: ["a"],
      now: time.now,
      signal: new AbortController().signal,
    });
    expect(outcome.kind).toBe("committed");
    const stored = fake.records.get("j1")!.record;
    expect(stored).toMatchObject({ submitId: "waiting", phase: "committed" });
    // As long a window from the take-over as the plan gave from its start (30 s).
    expect(stored.commitDeadline).toBe(40_000 + 30_000);
  });

  it("a claim after a wait stamps its time as updatedAt: the window other runtimes count from the server's stamp of the claim is the plan's", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "submitting", commitDeadline: 5000, submitId: "dead" }));
    const time = clock(1000);
    fake.failNext("createRecord", () => undefined);
    fake.failNext("createRecord", () => {
      time.set(40_000);
      fake.put(record({ phase: "rolledBack", status: "failed", submitId: "dead" }));
    });
    // Its process dies once the record is claimed: the claim is what the reapers judge.
    const died = await rejection(
      submitJob(fake.port, {
        record: record({ submitId: "waiting" }),
        bodies: ["a"],
        now: time.now,
        signal: new AbortController().signal,
        hooks: {
          afterStep: (step) => {
            if (step === SubmitStep.recordCreated) throw new SimulatedCrash("died");
          },
        },
      }),
    );
    expect(died).toBeInstanceOf(SimulatedCrash);
    const claimed = fake.records.get("j1")!.record;
    expect(claimed).toMatchObject({
      submitId: "waiting",
      phase: "submitting",
      createdAt: 1000,
      updatedAt: 40_000,
    });
    // From the plan's time the window held the 39 s waited too: a reaper waited that much longer.
    expect(claimed.commitDeadline - claimed.updatedAt).toBe(30_000);
  });

  it("creates again when the record vanished between the conflict and the read", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "committed" }));
    fake.failNext("getRecord", () => fake.records.delete("j1"));
    const outcome = await submitJob(fake.port, {
      record: record({ submitId: "new" }),
      bodies: ["a"],
      now: () => 7,
      signal: new AbortController().signal,
    });
    expect(outcome.kind).toBe("committed");
    expect(fake.calls.slice(0, 3)).toEqual(["createRecord j1", "getRecord j1", "createRecord j1"]);
  });

  it("re-reads when the take-over of a rolled-back record loses a race", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "rolledBack", submitId: "old" }));
    // Someone else commits the same key in between.
    fake.failNext("updateRecord", () => fake.put(record({ phase: "committed", submitId: "winner" })));
    const outcome = await submitJob(fake.port, {
      record: record({ submitId: "loser" }),
      bodies: ["a"],
      now: () => 7,
      signal: new AbortController().signal,
    });
    expect(outcome).toMatchObject({ kind: "existing", found: { record: { submitId: "winner" } } });
  });

  it("an error other than a conflict while creating the record is thrown as it is, nothing else done", async () => {
    const fake = fakeJobPort();
    const down = new Error("kv down");
    fake.failNext("createRecord", () => {
      throw down;
    });
    const error = await rejection(
      submitJob(fake.port, {
        record: record(),
        bodies: ["a"],
        now: () => 7,
        signal: new AbortController().signal,
      }),
    );
    expect(error).toBe(down);
    expect(fake.calls).toEqual(["createRecord j1"]);
  });

  it("an error other than a conflict while taking over is thrown as it is", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "rolledBack" }));
    const down = new Error("kv down");
    fake.failNext("updateRecord", () => {
      throw down;
    });
    const error = await rejection(
      submitJob(fake.port, {
        record: record(),
        bodies: ["a"],
        now: () => 7,
        signal: new AbortController().signal,
      }),
    );
    expect(error).toBe(down);
  });

  it("waits for a submit of the same key still in flight, and gives up on one stuck for a minute past its deadline", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "submitting", commitDeadline: 1000 }));
    const stuck = await rejection(
      submitJob(fake.port, {
        record: record(),
        bodies: ["a"],
        now: () => 61_001,
        signal: new AbortController().signal,
      }),
    );
    expect((stuck as Error).message).toBe("job j1 is stuck in submit; the reaper will roll it back");

    // At exactly a minute past the deadline it still waits; an abort ends the wait with the signal's reason.
    const controller = new AbortController();
    const reason = new Error("stopping");
    const waiting = submitJob(fake.port, {
      record: record(),
      bodies: ["a"],
      now: () => 61_000,
      signal: controller.signal,
    });
    controller.abort(reason);
    expect(await rejection(waiting)).toBe(reason);
  });

  it("judges a submit of the same key stuck by the server's stamp of its record: one by a clock ten minutes ahead is given up on a minute past its window", async () => {
    const fake = fakeJobPort();
    // Claimed by a clock ten minutes ahead, stored by the server at 1000: its window ends at 31_000.
    fake.put(record({ phase: "submitting", updatedAt: 601_000, commitDeadline: 631_000 }), 1000);
    const stuck = await rejection(
      submitJob(fake.port, {
        record: record(),
        bodies: ["a"],
        now: () => 91_001,
        aheadMs: () => 0,
        signal: new AbortController().signal,
      }),
    );
    expect((stuck as Error).message).toBe("job j1 is stuck in submit; the reaper will roll it back");
  });
});

describe("rollBack", () => {
  it("leaves a committed job alone: supervised, not undone, its tasks kept (they are the job's)", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "committed", status: "running" }));
    await rollBack(fake.port, record(), "why", () => 9);
    expect(fake.records.get("j1")!.record.phase).toBe("committed");
    expect(fake.calls).toEqual(["getRecord j1"]);
  });

  it("a submit rolled back by the reaper whose key the next submit took over removes nothing of that one", async () => {
    const fake = fakeJobPort();
    // The reaper rolled `s1` back (its tasks removed); `s2` of the same key took the record over,
    // published its tasks and made its consumer, and committed.
    fake.put(record({ submitId: "s2", phase: "committed", status: "running" }));
    fake.consumers.add("j1");
    await rollBack(fake.port, record({ submitId: "s1" }), "why", () => 9);
    expect(fake.calls).toEqual(["getRecord j1"]);
    expect(fake.consumers.has("j1")).toBe(true);
    expect(fake.records.get("j1")!.record).toMatchObject({ submitId: "s2", phase: "committed" });
  });

  it("a submit still holding its record: its tasks removed, then its record marked", async () => {
    const fake = fakeJobPort();
    fake.put(record());
    await rollBack(fake.port, record(), "why", () => 9);
    expect(fake.calls).toEqual([
      "getRecord j1",
      "removeTasks q j1",
      "getRecord j1",
      "updateRecord j1 rolledBack failed",
    ]);
  });

  it("retries a lost compare-and-set, up to five times", async () => {
    const fake = fakeJobPort();
    fake.put(record());
    for (let n = 0; n < 4; n++) fake.failNext("updateRecord", () => fake.put(record({ updatedAt: n })));
    await rollBack(fake.port, record(), "why", () => 9);
    expect(fake.records.get("j1")!.record).toMatchObject({ phase: "rolledBack", reason: "why" });

    const stubborn = fakeJobPort();
    stubborn.put(record());
    for (let n = 0; n < 5; n++)
      stubborn.failNext("updateRecord", () => stubborn.put(record({ updatedAt: n })));
    await rollBack(stubborn.port, record(), "why", () => 9);
    expect(stubborn.records.get("j1")!.record.phase).toBe("submitting");
    expect(stubborn.calls.filter((c) => c.startsWith("updateRecord"))).toHaveLength(5);
  });

  it("throws an error that is not a conflict", async () => {
    const fake = fakeJobPort();
    fake.put(record());
    const down = new Error("down");
    fake.failNext("updateRecord", () => {
      throw down;
    });
    expect(await rejection(rollBack(fake.port, record(), "why", () => 9))).toBe(down);
  });
});

/** A reaper whose clock is the server's (the fake port keeps no server stamps: deadlines as written). */
const noSkew = () => 0;

describe("reapSubmits", () => {
  it("touches only submits past their deadline plus the grace: forward if the consumer exists, else back", async () => {
    const fake = fakeJobPort();
    fake.put(record({ id: "fresh", commitDeadline: 10_000 }));
    fake.put(record({ id: "edge", commitDeadline: 5000 })); // 5000 + 1000 = now: due
    fake.put(record({ id: "dead", commitDeadline: 1000 }));
    fake.put(record({ id: "almost", commitDeadline: 1000 }));
    fake.put(record({ id: "done", phase: "committed", status: "running", commitDeadline: 0 }));
    fake.consumers.add("almost");
    const report = await reapSubmits(fake.port, () => 6000, 1000, noSkew);
    expect(report).toEqual({ rolledBack: ["edge", "dead"], rolledForward: ["almost"] });
    expect(fake.records.get("fresh")!.record.phase).toBe("submitting");
    expect(fake.records.get("edge")!.record).toMatchObject({
      phase: "rolledBack",
      status: "failed",
      reason: "submit did not commit before its deadline (rolled back by the reaper)",
    });
    expect(fake.records.get("almost")!.record).toMatchObject({
      phase: "committed",
      status: "running",
      updatedAt: 6000,
    });
    expect(fake.records.get("done")!.record.updatedAt).toBe(1000);
  });

  it("a record not due a millisecond before its deadline plus grace is left alone", async () => {
    const fake = fakeJobPort();
    const left = record({ commitDeadline: 5000 });
    fake.put(left);
    expect(await reapSubmits(fake.port, () => 5999, 1000, noSkew)).toEqual({
      rolledBack: [],
      rolledForward: [],
    });
    // Listed, a record has no server stamp: it is read (with its stamp) before it is judged.
    expect(fake.calls).toEqual(["listRecords", `getRecord ${left.id}`]);
  });

  it("judges a deadline by the server's stamp of the record: a submitter ten minutes ahead that died is due its window after its write", async () => {
    const fake = fakeJobPort();
    // Planned and claimed by a clock ten minutes ahead; the server stored the claim at 1000.
    const ahead = record({ createdAt: 601_000, updatedAt: 601_000, commitDeadline: 631_000 });
    fake.put(ahead, 1000);
    // Its 30 s window and the 10 s grace from the server's stamp: due at 41_000, by a reaper whose clock is the server's.
    expect(await reapSubmits(fake.port, () => 40_999, 10_000, noSkew)).toEqual({
      rolledBack: [],
      rolledForward: [],
    });
    expect(await reapSubmits(fake.port, () => 41_000, 10_000, noSkew)).toEqual({
      rolledBack: ["j1"],
      rolledForward: [],
    });
  });

  it("judges a deadline by the server's stamp of the record: a reaper a minute ahead leaves a live submit alone until its window and grace passed", async () => {
    const fake = fakeJobPort();
    // Stamped by a right clock at 1000, stored by the server at 1000.
    fake.put(record({ updatedAt: 1000, commitDeadline: 31_000 }), 1000);
    const aMinuteAhead = () => 60_000;
    // At the server's 40_999 (its own 100_999), not due; by its own clock it was, from 41_000 on.
    expect(await reapSubmits(fake.port, () => 100_999, 10_000, aMinuteAhead)).toEqual({
      rolledBack: [],
      rolledForward: [],
    });
    expect(fake.records.get("j1")!.record.phase).toBe("submitting");
    expect(await reapSubmits(fake.port, () => 101_000, 10_000, aMinuteAhead)).toEqual({
      rolledBack: ["j1"],
      rolledForward: [],
    });
  });

  it("uses the records it is given instead of listing", async () => {
    const fake = fakeJobPort();
    fake.put(record({ commitDeadline: 0 }));
    const report = await reapSubmits(fake.port, () => 6000, 0, noSkew, []);
    expect(report).toEqual({ rolledBack: [], rolledForward: [] });
    expect(fake.calls).toEqual([]);
  });

  it("does not roll forward a record that committed meanwhile, or lost a race", async () => {
    const fake = fakeJobPort();
    fake.put(record({ id: "a", commitDeadline: 0 }));
    fake.put(record({ id: "b", commitDeadline: 0 }));
    fake.consumers.add("a");
    fake.consumers.add("b");
    const listed = [...fake.records.values()];
    fake.put(record({ id: "a", phase: "committed", status: "running", commitDeadline: 0 }));
    fake.failNext("updateRecord", () => fake.put(record({ id: "b", commitDeadline: 0, updatedAt: 5 })));
    const report = await reapSubmits(fake.port, () => 6000, 0, noSkew, listed);
    expect(report).toEqual({ rolledBack: [], rolledForward: [] });
    expect(fake.records.get("b")!.record.phase).toBe("submitting");
  });

  it("leaves a submit of the same key that holds the record now: not its tasks, not its record", async () => {
    const fake = fakeJobPort();
    // What the pass read: a dead submit, long past its deadline.
    const judged = record({ id: "k", commitDeadline: 0, submitId: "dead" });
    // Since then another reaper rolled it back and a new submit of the key took the record over.
    fake.put(record({ id: "k", commitDeadline: 10_000, submitId: "new" }));
    fake.tasks.set("k", ['{"i":0,"p":1}']);
    const report = await reapSubmits(fake.port, () => 6000, 0, noSkew, [{ record: judged }]);
    expect(report).toEqual({ rolledBack: [], rolledForward: [] });
    expect(fake.records.get("k")!.record).toMatchObject({ phase: "submitting", submitId: "new" });
    expect(fake.tasks.get("k")).toEqual(['{"i":0,"p":1}']);
  });

  it("does not mark rolled back a submit of the key that took the record over while the tasks were removed", async () => {
    const fake = fakeJobPort();
    fake.put(record({ id: "k", commitDeadline: 0, submitId: "dead" }));
    fake.failNext("removeTasks", () =>
      fake.put(record({ id: "k", commitDeadline: 10_000, submitId: "new" })),
    );
    await reapSubmits(fake.port, () => 6000, 0, noSkew);
    expect(fake.records.get("k")!.record).toMatchObject({ phase: "submitting", submitId: "new" });
  });

  it("skips a record deleted meanwhile, and throws an error that is not a conflict", async () => {
    const fake = fakeJobPort();
    fake.consumers.add("gone");
    const report = await reapSubmits(fake.port, () => 6000, 0, noSkew, [
      { record: record({ id: "gone", commitDeadline: 0 }) },
    ]);
    expect(report).toEqual({ rolledBack: [], rolledForward: [] });

    fake.put(record({ id: "x", commitDeadline: 0 }));
    fake.consumers.add("x");
    const down = new Error("down");
    fake.failNext("updateRecord", () => {
      throw down;
    });
    expect(await rejection(reapSubmits(fake.port, () => 6000, 0, noSkew))).toBe(down);
  });
});

describe("reapSubmits: lane jobs (the task's publish is the commit point)", () => {
  /** A lane submit that died after `step`, its commit deadline (1000) long past at 6000. */
  const crashedAfter = async (step: SubmitStep) => {
    const fake = fakeJobPort();
    const error = await rejection(
      submitJob(fake.port, {
        record: laneRecord({ commitDeadline: 1000 }),
        bodies: ['{"i":0,"p":1}'],
        now: () => 7,
        signal: new AbortController().signal,
        hooks: {
          afterStep: (done) => {
            if (done === step) throw new SimulatedCrash("killed");
          },
        },
      }),
    );
    expect(error).toBeInstanceOf(SimulatedCrash);
    expect(fake.records.get("j1")!.record.phase).toBe("submitting");
    return fake;
  };

  it("one that died after publishing its task is rolled forward: the task is stored", async () => {
    const fake = await crashedAfter(SubmitStep.tasksPublished);
    expect(await reapSubmits(fake.port, () => 6000, 1000, noSkew)).toEqual({
      rolledBack: [],
      rolledForward: ["j1"],
    });
    expect(fake.records.get("j1")!.record).toMatchObject({
      phase: "committed",
      status: "running",
      lane: true,
    });
    expect(fake.tasks.get("j1")).toEqual(['{"i":0,"p":1}']);
    expect(fake.calls).toContain("tasksCommitted q j1 lane");
  });

  it("one whose task was answered meanwhile (result stored, task acked) is rolled forward", async () => {
    const fake = await crashedAfter(SubmitStep.tasksPublished);
    fake.tasks.delete("j1");
    fake.answered.add("j1");
    expect(await reapSubmits(fake.port, () => 6000, 1000, noSkew)).toEqual({
      rolledBack: [],
      rolledForward: ["j1"],
    });
    expect(fake.records.get("j1")!.record).toMatchObject({ phase: "committed", status: "running" });
  });

  it("one that died before publishing is rolled back, its lane task purged", async () => {
    const fake = await crashedAfter(SubmitStep.recordCreated);
    expect(await reapSubmits(fake.port, () => 6000, 1000, noSkew)).toEqual({
      rolledBack: ["j1"],
      rolledForward: [],
    });
    expect(fake.records.get("j1")!.record).toMatchObject({ phase: "rolledBack", status: "failed" });
    expect(fake.calls).toContain("removeTasks q j1 lane");
  });
});

describe("lostReason: lane jobs", () => {
  it("a running lane job is lost once neither its task nor a result of it is stored", async () => {
    const fake = fakeJobPort();
    const running = laneRecord({ phase: "committed", status: "running" });
    fake.put(running);
    fake.tasks.set("j1", ['{"i":0,"p":1}']);
    expect(await lostReason(fake.port, running, Date.now())).toBeUndefined();
    fake.tasks.delete("j1");
    fake.answered.add("j1");
    expect(await lostReason(fake.port, running, Date.now())).toBeUndefined();
    fake.answered.delete("j1");
    expect(await lostReason(fake.port, running, Date.now())).toMatch(/tasks lost/);
  });
});

describe("lostReason: a job's own consumer", () => {
  it("a running job whose consumer is gone over stored tasks gets it made again, and is not lost", async () => {
    const fake = fakeJobPort();
    const running = record({ phase: "committed", status: "running" });
    fake.put(running);
    fake.tasks.set("j1", ['{"i":0,"p":1}']);
    // A server restarted with its store: the tasks are there, the consumer (kept in memory) is not.
    expect(fake.consumers.has("j1")).toBe(false);
    expect(await lostReason(fake.port, running, Date.now())).toBeUndefined();
    expect(fake.consumers.has("j1")).toBe(true);
    expect(await lostReason(fake.port, running, Date.now())).toBeUndefined();
    expect(fake.calls.filter((c) => c.startsWith("restoreConsumer"))).toEqual(["restoreConsumer q j1"]);
    // Made again, then its record written once (a worker that looked while the consumer was gone
    // hears of the job through its record watch); not when the consumer was there.
    const writes = fake.calls.filter((c) => c.startsWith("restoreConsumer") || c.startsWith("updateRecord"));
    expect(writes).toEqual(["restoreConsumer q j1", "updateRecord j1 committed running"]);
  });

  it("one whose consumer and tasks are both gone is lost; an ended one's consumer is not made again", async () => {
    const fake = fakeJobPort();
    const running = record({ phase: "committed", status: "running" });
    fake.put(running);
    expect(await lostReason(fake.port, running, Date.now())).toMatch(
      /tasks lost: the job's consumer is gone/,
    );
    fake.put(record({ phase: "committed", status: "failed", reason: "cancelled" }));
    fake.tasks.set("j1", ['{"i":0,"p":1}']);
    expect(await lostReason(fake.port, running, Date.now())).toBeUndefined();
    expect(fake.consumers.has("j1")).toBe(false);
  });
});

describe("record updates", () => {
  it("updateRecordWith re-reads after a conflict and applies the change to the fresh record", async () => {
    const fake = fakeJobPort();
    fake.put(record({ counts: { done: 1, failed: 0, dead: 0 } }));
    fake.failNext("updateRecord", () => fake.put(record({ counts: { done: 5, failed: 0, dead: 0 } })));
    const seen: number[] = [];
    const result = await updateRecordWith(fake.port, "j1", (r) => {
      seen.push(r.counts.done);
      return { ...r, reason: `saw ${r.counts.done}` };
    });
    expect(seen).toEqual([1, 5]);
    expect(result?.reason).toBe("saw 5");
    expect(fake.records.get("j1")!.record.reason).toBe("saw 5");
  });

  it("updateRecordWith: undefined for a missing record, the record as it is when nothing changes", async () => {
    const fake = fakeJobPort();
    expect(await updateRecordWith(fake.port, "nope", (r) => r)).toBeUndefined();
    const stored = record();
    fake.put(stored);
    expect(await updateRecordWith(fake.port, "j1", () => undefined)).toBe(stored);
    expect(fake.calls.filter((c) => c.startsWith("updateRecord"))).toEqual([]);
  });

  it("updateRecordWith gives up after `attempts` conflicts with a RevisionConflict naming the record", async () => {
    const fake = fakeJobPort();
    fake.put(record());
    for (let n = 0; n < 3; n++) fake.failNext("updateRecord", () => fake.put(record({ updatedAt: n })));
    const error = await rejection(updateRecordWith(fake.port, "j1", (r) => ({ ...r }), 3));
    expect(error).toBeInstanceOf(RevisionConflict);
    expect(error).toMatchObject({ message: "job record j1 kept changing", key: "j1" });
    expect(fake.calls.filter((c) => c.startsWith("updateRecord"))).toHaveLength(3);

    // The default is 10 attempts.
    const ten = fakeJobPort();
    ten.put(record());
    for (let n = 0; n < 9; n++) ten.failNext("updateRecord", () => ten.put(record({ updatedAt: n })));
    await updateRecordWith(ten.port, "j1", (r) => ({ ...r, reason: "made it" }));
    expect(ten.records.get("j1")!.record.reason).toBe("made it");
  });

  it("updateRecordWith throws an error that is not a conflict", async () => {
    const fake = fakeJobPort();
    fake.put(record());
    const down = new Error("down");
    fake.failNext("updateRecord", () => {
      throw down;
    });
    expect(await rejection(updateRecordWith(fake.port, "j1", (r) => ({ ...r })))).toBe(down);
  });

  it("recordProgress writes a change of status or of any count, and nothing else", async () => {
    const fake = fakeJobPort();
    fake.put(record({ status: "running", phase: "committed", counts: { done: 1, failed: 1, dead: 1 } }));
    const writes = () => fake.calls.filter((c) => c.startsWith("updateRecord")).length;
    await recordProgress(fake.port, "j1", "running", { done: 1, failed: 1, dead: 1 }, 50);
    expect(writes()).toBe(0);
    await recordProgress(fake.port, "j1", "stalled", { done: 1, failed: 1, dead: 1 }, 60);
    expect(fake.records.get("j1")!.record).toMatchObject({ status: "stalled", updatedAt: 60 });
    await recordProgress(fake.port, "j1", "stalled", { done: 2, failed: 1, dead: 1 }, 70);
    await recordProgress(fake.port, "j1", "stalled", { done: 2, failed: 2, dead: 1 }, 80);
    await recordProgress(fake.port, "j1", "stalled", { done: 2, failed: 2, dead: 2 }, 90);
    expect(writes()).toBe(4);
    expect(fake.records.get("j1")!.record).toMatchObject({
      status: "stalled",
      counts: { done: 2, failed: 2, dead: 2 },
      updatedAt: 90,
    });
  });

  it("recordProgress never moves a job back: no lower status, no lower count, nothing before the commit", async () => {
    const fake = fakeJobPort();
    fake.put(record({ status: "queuing", phase: "submitting" }));
    await recordProgress(fake.port, "j1", "running", { done: 1, failed: 0, dead: 0 }, 40);
    expect(fake.records.get("j1")!.record).toMatchObject({ status: "queuing", phase: "submitting" });
    fake.put(record({ status: "running", phase: "committed", counts: { done: 3, failed: 1, dead: 0 } }));
    // A write planned while the job was queuing, with counts older than the record's.
    await recordProgress(fake.port, "j1", "queuing", { done: 2, failed: 0, dead: 1 }, 50);
    expect(fake.records.get("j1")!.record).toMatchObject({
      status: "running",
      counts: { done: 3, failed: 1, dead: 1 },
      updatedAt: 50,
    });
  });

  it("recordProgress never reopens a finished job", async () => {
    for (const status of ["succeeded", "failed"] as const) {
      const fake = fakeJobPort();
      fake.put(record({ status, phase: "committed" }));
      await recordProgress(fake.port, "j1", "running", { done: 9, failed: 0, dead: 0 }, 50);
      expect(fake.records.get("j1")!.record.status).toBe(status);
    }
  });
});

describe("cancelJob: a lane job whose commit is not written yet", () => {
  const submitted = async (publish: boolean) => {
    const fake = fakeJobPort();
    fake.put(laneRecord({ phase: "submitting", status: "queuing", updatedAt: 10 }));
    if (publish) await fake.port.publishTasks(laneRecord(), ["a"], new AbortController().signal);
    return fake;
  };

  it("is cancelled as committed once its task is stored, the task removed", async () => {
    const fake = await submitted(true);
    const stored = (
      await cancelJob(fake.port, "j1", "no longer wanted", { done: 0, failed: 0, dead: 0 }, 50, {
        log: silentLogger(),
      })
    )?.record;
    expect(stored).toMatchObject({
      phase: "committed",
      status: "failed",
      reason: "cancelled: no longer wanted",
    });
    expect(fake.records.get("j1")!.record).toMatchObject({ phase: "committed", status: "failed" });
    expect(fake.calls.at(-1)).toBe("removeTasks q j1 lane");
  });

  it("is left alone while its task is not stored: its submit decides", async () => {
    const fake = await submitted(false);
    await cancelJob(fake.port, "j1", "no longer wanted", { done: 0, failed: 0, dead: 0 }, 50, {
      log: silentLogger(),
    });
    expect(fake.records.get("j1")!.record).toMatchObject({ phase: "submitting", status: "queuing" });
    expect(fake.calls.filter((c) => c.startsWith("removeTasks"))).toEqual([]);
  });
});

describe("committedRecord", () => {
  it("reads a lane record again once its task is found: an end written meanwhile is what it answers", async () => {
    const fake = fakeJobPort();
    fake.put(laneRecord({ phase: "submitting", status: "queuing" }));
    fake.tasks.set("j1", ["a"]);
    const found = fake.records.get("j1")!;
    // The end lands while the task is looked for.
    fake.failNext("tasksCommitted", () => {
      fake.put({
        ...found.record,
        phase: "committed",
        status: "failed",
        reason: "cancelled: x",
        updatedAt: 9,
      });
    });
    expect((await committedRecord(fake.port, found))?.record).toMatchObject({
      phase: "committed",
      status: "failed",
      reason: "cancelled: x",
    });
  });

  it("answers a lane record still submitting as committed once its task is stored, else as no job", async () => {
    const fake = fakeJobPort();
    fake.put(laneRecord({ phase: "submitting", status: "queuing" }));
    expect(await committedRecord(fake.port, fake.records.get("j1"))).toBeUndefined();
    fake.tasks.set("j1", ["a"]);
    const view = await committedRecord(fake.port, fake.records.get("j1"));
    expect(view).toEqual({
      record: expect.objectContaining({ phase: "committed", status: "running" }),
      revision: fake.records.get("j1")!.revision,
    });
    // Another submit's record (not a lane job's) is as stored.
    const plain = fakeJobPort();
    plain.put(record({ phase: "submitting", status: "queuing" }));
    expect(await committedRecord(plain.port, plain.records.get("j1"))).toBeUndefined();
  });
});

describe("finalizeJob", () => {
  it("writes the end, the counts and the reason, then removes the tasks", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "committed", status: "running" }));
    let t = 100;
    await finalizeJob(
      fake.port,
      {
        jobId: "j1",
        queue: "q",
        status: "failed",
        reason: "cancelled: x",
        counts: { done: 1, failed: 0, dead: 0 },
      },
      () => t++,
    );
    expect(fake.records.get("j1")!.record).toMatchObject({
      status: "failed",
      phase: "committed",
      reason: "cancelled: x",
      counts: { done: 1, failed: 0, dead: 0 },
      updatedAt: 100,
      finishedAt: 101,
    });
    expect(fake.calls.at(-1)).toBe("removeTasks q j1");
  });

  it("removes a lane job's task left from its lane: the stored record says where its tasks are", async () => {
    const fake = fakeJobPort();
    fake.put(laneRecord({ phase: "committed", status: "running" }));
    await finalizeJob(
      fake.port,
      {
        jobId: "j1",
        queue: "q",
        status: "failed",
        reason: "stalled",
        counts: { done: 0, failed: 0, dead: 0 },
      },
      () => 5,
    );
    expect(fake.calls.at(-1)).toBe("removeTasks q j1 lane");
  });

  it("looks for no task of a lane job whose task was answered (acked once stored), dead or not", async () => {
    for (const [counts, removes] of [
      [{ done: 1, failed: 0, dead: 0 }, false],
      [{ done: 0, failed: 1, dead: 0 }, false],
      // An exhausted task stays on the stream: it is removed.
      [{ done: 0, failed: 0, dead: 1 }, true],
    ] as const) {
      const fake = fakeJobPort();
      fake.put(laneRecord({ phase: "committed", status: "running" }));
      await finalizeJob(
        fake.port,
        { jobId: "j1", queue: "q", status: "succeeded", reason: null, counts },
        () => 5,
      );
      expect(
        fake.calls.some((c) => c.startsWith("removeTasks")),
        JSON.stringify(counts),
      ).toBe(removes);
    }
  });

  it("a record seen that needs no write is checked against the store: a write still on its way may differ", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "committed", status: "running" }));
    const before = fake.records.get("j1")!;
    // This actor's own `stalled` write landed; its answer (and so `seen`) has not come back yet.
    fake.put({ ...before.record, status: "stalled" });
    const seen: RecordSeen = { last: before };
    await recordProgress(fake.port, "j1", "running", { done: 0, failed: 0, dead: 0 }, 9, seen);
    expect(fake.calls.filter((c) => c.startsWith("getRecord"))).toHaveLength(1);
    expect(fake.records.get("j1")!.record.status).toBe("running");
  });

  it("writes the end on the revision it last wrote, without reading; a stale one is read again", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "committed", status: "running" }));
    const { record: stored, revision } = fake.records.get("j1")!;
    const seen: RecordSeen = { last: { record: stored, revision } };
    const end = {
      jobId: "j1",
      queue: "q",
      status: "succeeded",
      reason: null,
      counts: { done: 2, failed: 0, dead: 0 },
    } as const;
    await finalizeJob(fake.port, end, () => 5, seen);
    expect(fake.calls.filter((c) => c.startsWith("getRecord"))).toEqual([]);
    expect(fake.records.get("j1")!.record).toMatchObject({ status: "succeeded", counts: { done: 2 } });
    expect(seen.last).toEqual(fake.records.get("j1"));

    // Another writer (a progress write elsewhere) moved the record on: the seen revision conflicts.
    const other = fakeJobPort();
    other.put(record({ phase: "committed", status: "running" }));
    const before = other.records.get("j1")!;
    other.put({ ...before.record, counts: { done: 1, failed: 0, dead: 0 }, reason: "moved on" });
    const stale: RecordSeen = { last: before };
    await finalizeJob(other.port, end, () => 5, stale);
    expect(other.calls.filter((c) => c.startsWith("getRecord"))).toHaveLength(1);
    expect(other.records.get("j1")!.record).toMatchObject({ status: "succeeded", reason: "moved on" });
  });

  it("writes no reason when there is none, and marks a submit that never committed as rolled back", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "submitting", status: "queuing" }));
    await finalizeJob(
      fake.port,
      { jobId: "j1", queue: "q", status: "succeeded", reason: null, counts: { done: 2, failed: 0, dead: 0 } },
      () => 5,
    );
    const stored = fake.records.get("j1")!.record;
    expect(stored).toMatchObject({ status: "succeeded", phase: "rolledBack" });
    expect("reason" in stored).toBe(false);
  });

  it("leaves a finished record as it is, and still removes the tasks", async () => {
    const fake = fakeJobPort();
    const finished = record({ phase: "committed", status: "succeeded", reason: "first" });
    fake.put(finished);
    await finalizeJob(
      fake.port,
      {
        jobId: "j1",
        queue: "q",
        status: "failed",
        reason: "second",
        counts: { done: 0, failed: 2, dead: 0 },
      },
      () => 5,
    );
    expect(fake.records.get("j1")!.record).toBe(finished);
    expect(fake.calls).toContain("removeTasks q j1");

    const failed = fakeJobPort();
    failed.put(record({ phase: "committed", status: "failed" }));
    await finalizeJob(
      failed.port,
      { jobId: "j1", queue: "q", status: "succeeded", reason: null, counts: { done: 2, failed: 0, dead: 0 } },
      () => 5,
    );
    expect(failed.records.get("j1")!.record.status).toBe("failed");
  });
});

describe("a lane rollback and the next submit of its key", () => {
  const first = laneRecord({ total: 3 });
  const next = laneRecord({ total: 3, submitId: "s2" });
  const rollBackFirst = (fake: ReturnType<typeof fakeJobPort>) =>
    Effect.runPromise(rollBackLaneEffect(fake.port, first, "test", () => 5));

  it("marked here, the key taken over before its read: it removes its own tasks, below its mark", async () => {
    const fake = fakeJobPort();
    fake.put(first);
    fake.failNext("getRecord", () => undefined); // the mark's read: still this submit's
    fake.failNext("getRecord", () => fake.put(next)); // then taken over by the next submit
    expect(await rollBackFirst(fake)).toBeUndefined();
    expect(fake.calls).toContain("removeTasks q j1 lane");
    expect(fake.calls.indexOf("tasksMark q j1 lane")).toBeLessThan(
      fake.calls.indexOf("updateRecord j1 rolledBack failed"),
    );
  });

  it("marked by another rollback and taken over since: it removes nothing (its mark may be past the next submit's tasks)", async () => {
    const fake = fakeJobPort();
    fake.put(next);
    expect(await rollBackFirst(fake)).toBeUndefined();
    expect(fake.calls.filter((c) => c.startsWith("removeTasks") || c.startsWith("updateRecord"))).toEqual([]);
  });
});
