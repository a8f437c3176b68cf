/**
 * The job machine's arithmetic and wording, checked on a live actor against
 * numbers worked out by hand: the decayed rate and ETA, the stall deadlines
 * and their boundaries, the end reasons, what the submit and finalize are given,
 * and how a restarted actor resumes. (The model-based tests cover which
 * states the events lead to; these cover the values they leave behind.)
 */
import { describe, expect, it } from "vitest";
import { createActor } from "xstate";
import type { ResultEntry } from "../../src/kernel/job-progress.ts";
import type { FinalizeInput, JobSettings } from "../../src/kernel/job-record.ts";
import { type JobEvent, jobMachine, tickEveryMs } from "../../src/machines/job.machine.ts";
import type { JobInput } from "../../src/machines/job-context.ts";

const settings: JobSettings = {
  maxFailures: 0,
  ackWaitMs: 1000,
  maxDeliver: 3,
  backoffMs: [10],
  stallAfterMs: 60_000,
  stalledTimeoutMs: 0,
};

/** A submit and a finalize that never settle by themselves, and record what each was started with. */
const recorded = () => {
  const inputs: { submit: unknown[]; finalize: FinalizeInput[] } = { submit: [], finalize: [] };
  const actions = {
    startSubmit: ({ context }: { context: { jobId: string } }) => {
      inputs.submit.push({ jobId: context.jobId });
    },
    startFinalize: (_: unknown, end: FinalizeInput) => {
      inputs.finalize.push(end);
    },
  };
  return { inputs, actions };
};

const start = (overrides: Partial<Omit<JobInput, "settings">> & { settings?: Partial<JobSettings> } = {}) => {
  const { inputs, actions } = recorded();
  const input: JobInput = {
    jobId: "j1",
    queue: "images",
    total: 10,
    now: 0,
    ...overrides,
    settings: { ...settings, ...overrides.settings },
  };
  const actor = createActor(jobMachine.provide({ actions }), { input });
  actor.start();
  return { actor, inputs, ctx: () => actor.getSnapshot().context, value: () => actor.getSnapshot().value };
};

const committed = (at?: number): JobEvent => ({
  type: "submit.committed",
  ...(at === undefined ? {} : { at }),
});
const results = (entries: ResultEntry[], at: number, replay?: boolean): JobEvent => ({
  type: "results.received",
  entries,
  at,
  ...(replay ? { replay } : {}),
});
const ok = (...indexes: number[]) => indexes.map((i) => ({ i, ok: true }));
const tick = (now: number): JobEvent => ({ type: "clock.tick", now });

describe("job machine: rate and ETA", () => {
  it("measures the rate from the first answer, decayed with a 10 s time constant", () => {
    const { actor, ctx } = start({ now: 0 });
    actor.send(committed(1000));
    expect(ctx().lastProgressAt).toBe(1000);

    // The first answer starts the rate's clock: no rate, no ETA yet.
    actor.send(results(ok(0), 2000));
    expect(ctx()).toMatchObject({
      done: 1,
      throughput: 0,
      throughputAt: 2000,
      etaMs: null,
      lastProgressAt: 2000,
    });

    // 2 answers in 1000 ms: 2 tasks/s; 7 left → 3.5 s.
    actor.send(results(ok(1, 2), 3000));
    expect(ctx().rateTasks).toBe(2);
    expect(ctx().rateMs).toBe(1000);
    expect(ctx().throughput).toBe(2);
    expect(ctx().etaMs).toBe(3500);
    expect(ctx().throughputAt).toBe(3000);

    // 1 more after 2000 ms: decay e^(-0.2) = 0.8187307531; tasks 2·d + 1, ms 1000·d + 2000.
    actor.send(results(ok(3), 5000));
    expect(ctx().rateTasks).toBeCloseTo(2.6374615062, 9);
    expect(ctx().rateMs).toBeCloseTo(2818.7307531, 6);
    expect(ctx().throughput).toBeCloseTo(0.9356911806, 9);
    // 6 left at 0.93569 tasks/s: 6412.37 ms, rounded.
    expect(ctx().etaMs).toBe(6412);
    expect(ctx().lastProgressAt).toBe(5000);
  });

  it("failed and dead answers count as answered for the ETA, like done ones", () => {
    const { actor, ctx } = start({ settings: { maxFailures: 1 } });
    actor.send(committed(0));
    actor.send(results(ok(0), 2000));
    actor.send(
      results(
        [
          { i: 1, ok: false },
          { i: 2, ok: false, dead: true },
        ],
        3000,
      ),
    );
    // 2 answers in 1000 ms: 2 tasks/s; 10 − 3 = 7 left → 3.5 s.
    expect(ctx().etaMs).toBe(3500);
  });

  it("snapshots are values: a later answer does not change an earlier snapshot's bitmaps", () => {
    const { actor } = start({ settings: { maxFailures: 1 } });
    actor.send(committed(0));
    actor.send(results([{ i: 0, ok: false, dead: true }], 10));
    const before = actor.getSnapshot().context;
    actor.send(results([{ i: 1, ok: false, dead: true }], 20));
    expect([...before.answered]).toEqual([0b0000_0001, 0]);
    expect([...before.deadBits]).toEqual([0b0000_0001, 0]);
    expect([...actor.getSnapshot().context.deadBits]).toEqual([0b0000_0011, 0]);
  });

  it("two answers in the same millisecond count as 1 ms apart", () => {
    const { actor, ctx } = start();
    actor.send(committed(0));
    actor.send(results(ok(0), 100));
    actor.send(results(ok(1), 100));
    // 1 task in 1 ms: 1000 tasks/s; 8 left → 8 ms.
    expect(ctx().throughput).toBe(1000);
    expect(ctx().etaMs).toBe(8);
  });

  it("the last answer sets the ETA to 0, on the first answer as well as later ones", () => {
    const one = start({ total: 1 });
    one.actor.send(committed(0));
    one.actor.send(results(ok(0), 50));
    expect(one.ctx().etaMs).toBe(0);
    expect(one.value()).toEqual({ succeeded: "recording" });

    const two = start({ total: 2 });
    two.actor.send(committed(0));
    two.actor.send(results(ok(0), 50));
    two.actor.send(results(ok(1), 80));
    expect(two.ctx().etaMs).toBe(0);
    expect(two.ctx().throughput).toBeCloseTo(1000 / 30, 9);
  });

  it("replayed answers are counted and start the rate's clock, but are no rate sample; progress only beyond the record's", () => {
    const { actor, ctx } = start({ resumeFrom: "running" });
    actor.send(results(ok(0, 1, 2), 4000, true));
    expect(ctx()).toMatchObject({ done: 3, throughput: 0, rateTasks: 0, throughputAt: 4000, etaMs: null });
    actor.send(results(ok(3), 5000));
    actor.send(results(ok(4, 5, 6, 7, 8), 6000, true));
    expect(ctx().done).toBe(9);
    // Only the live answer at 5000 made a sample (1 task in 1000 ms); the replay left it as it was.
    expect(ctx().rateTasks).toBe(1);
    expect(ctx().rateMs).toBe(1000);
    expect(ctx().throughputAt).toBe(6000);
    // Answers the record did not have (it had none) were given after its last write: progress.
    expect(ctx().lastProgressAt).toBe(6000);
    // Those it had say nothing of when they were given: no progress.
    const known = start({ resumeFrom: "running", counts: { done: 3, failed: 0, dead: 0 }, now: 1000 });
    known.actor.send(results(ok(0, 1, 2), 4000, true));
    expect(known.ctx()).toMatchObject({ done: 3, lastProgressAt: 1000 });
  });

  it("time never runs backwards: an older answer leaves `now` where it was", () => {
    const { actor, ctx } = start({ now: 500 });
    actor.send(committed(600));
    actor.send(tick(900));
    actor.send(results(ok(0), 700));
    expect(ctx().now).toBe(900);
    actor.send(results(ok(1), 1200));
    expect(ctx().now).toBe(1200);
    // A duplicate changes no count, but still moves `now` forward (and never back).
    actor.send(results(ok(1), 1500));
    expect(ctx().now).toBe(1500);
    expect(ctx().done).toBe(2);
    expect(ctx().lastProgressAt).toBe(1200);
    actor.send(results(ok(1), 1000));
    expect(ctx().now).toBe(1500);
  });
});

describe("job machine: counting", () => {
  it("ignores indexes outside 0..total-1 and non-integers", () => {
    const { actor, ctx } = start({ total: 9 });
    actor.send(committed(0));
    actor.send(
      results(
        [
          { i: -1, ok: true },
          { i: 9, ok: true },
          { i: 1.5, ok: true },
          { i: Number.NaN, ok: true },
        ],
        10,
      ),
    );
    expect(ctx()).toMatchObject({ done: 0, failed: 0, dead: 0, lastProgressAt: 0 });
    actor.send(
      results(
        [
          { i: 8, ok: true },
          { i: 0, ok: true },
        ],
        20,
      ),
    );
    expect(ctx().done).toBe(2);
    expect([...ctx().answered]).toEqual([0b0000_0001, 0b0000_0001]);
  });

  it("sorts answers into done, failed and dead, bit by bit across bytes", () => {
    const { actor, ctx } = start({ total: 20, settings: { maxFailures: 1 } });
    actor.send(committed(0));
    actor.send(
      results(
        [
          { i: 9, ok: true },
          { i: 17, ok: false },
          { i: 3, ok: false, dead: true },
          { i: 9, ok: false }, // answered already in this batch
        ],
        10,
      ),
    );
    expect(ctx()).toMatchObject({ done: 1, failed: 1, dead: 1 });
    expect([...ctx().answered]).toEqual([0b0000_1000, 0b0000_0010, 0b0000_0010]);
    expect([...ctx().deadBits]).toEqual([0b0000_1000, 0, 0]);
  });

  it("a redrive forgets a dead answer only, and is not progress", () => {
    const { actor, ctx } = start({ total: 4, settings: { maxFailures: 1 } });
    actor.send(committed(0));
    actor.send(
      results(
        [
          { i: 1, ok: false, dead: true },
          { i: 2, ok: false },
        ],
        100,
      ),
    );
    actor.send(
      results(
        [
          { i: 2, redrive: true },
          { i: 3, redrive: true },
        ],
        200,
      ),
    );
    expect(ctx()).toMatchObject({ failed: 1, dead: 1, lastProgressAt: 100, now: 200 });
    actor.send(results([{ i: 1, redrive: true }], 300));
    expect(ctx()).toMatchObject({ failed: 1, dead: 0, lastProgressAt: 100, now: 300 });
    expect([...ctx().answered]).toEqual([0b0000_0100]);
    expect([...ctx().deadBits]).toEqual([0]);
    // Answered again after the redrive: counted anew.
    actor.send(results(ok(1), 400));
    expect(ctx()).toMatchObject({ done: 1, dead: 0, lastProgressAt: 400 });
  });
});

describe("job machine: stall deadlines", () => {
  it("stalls exactly stallAfterMs after the last progress, not a millisecond before", () => {
    const { actor, ctx, value } = start({ settings: { stallAfterMs: 1000 } });
    actor.send(committed(200));
    actor.send(tick(1199));
    expect(value()).toBe("running");
    expect(ctx().now).toBe(1199);
    actor.send(tick(1200));
    expect(value()).toBe("stalled");
    expect(ctx().stalledSince).toBe(1200);
    expect(ctx().now).toBe(1200);
  });

  it("the stall clock starts at the commit, or at creation when the submit reports no time", () => {
    const late = start({ now: 100, settings: { stallAfterMs: 1000 } });
    late.actor.send(committed(5000));
    expect(late.ctx()).toMatchObject({ lastProgressAt: 5000, now: 5000 });
    late.actor.send(tick(5999));
    expect(late.value()).toBe("running");

    const early = start({ now: 100, settings: { stallAfterMs: 1000 } });
    early.actor.send(committed(50)); // a commit stamped before the actor started counts from its start
    expect(early.ctx()).toMatchObject({ lastProgressAt: 100, now: 100 });

    const none = start({ now: 100, settings: { stallAfterMs: 1000 } });
    none.actor.send(committed(undefined));
    expect(none.ctx()).toMatchObject({ lastProgressAt: 100, now: 100 });
    none.actor.send(tick(1100));
    expect(none.value()).toBe("stalled");
  });

  it("an answer stamped in the millisecond the job stalled takes it back to running", () => {
    const { actor, ctx, value } = start({ settings: { stallAfterMs: 1000 } });
    actor.send(committed(0));
    actor.send(tick(1000));
    expect(value()).toBe("stalled");
    actor.send(results(ok(0), 999));
    expect(value()).toBe("stalled");
    actor.send(results(ok(1), 1000));
    expect(value()).toBe("running");
    expect(ctx().stalledSince).toBeNull();
  });

  it("fails stalledTimeoutMs after stalling, with how long and how many in the reason", () => {
    const { actor, ctx, value, inputs } = start({ settings: { stallAfterMs: 1000, stalledTimeoutMs: 3000 } });
    actor.send(committed(0));
    actor.send(results(ok(0, 1), 500));
    actor.send(tick(1500));
    expect(value()).toBe("stalled");
    actor.send(tick(4499));
    expect(value()).toBe("stalled");
    expect(ctx().now).toBe(4499);
    actor.send(tick(4500));
    expect(value()).toEqual({ failed: "recording" });
    expect(ctx().reason).toBe("stalled: no progress for 4000 ms with 8 tasks left");
    expect(inputs.finalize).toEqual([
      {
        jobId: "j1",
        queue: "images",
        status: "failed",
        reason: "stalled: no progress for 4000 ms with 8 tasks left",
        counts: { done: 2, failed: 0, dead: 0 },
      },
    ]);
  });

  it("a watcher's tick (its runtime holds no lease) shows the stall but applies no stalled timeout", () => {
    const { actor, value } = start({ settings: { stallAfterMs: 1000, stalledTimeoutMs: 3000 } });
    actor.send(committed(0));
    actor.send({ type: "clock.tick", now: 1000, supervising: false });
    expect(value()).toBe("stalled");
    actor.send({ type: "clock.tick", now: 1_000_000, supervising: false });
    expect(value()).toBe("stalled");
    // Once its runtime supervises the job (a takeover), the timeout applies.
    actor.send({ type: "clock.tick", now: 1_000_001, supervising: true });
    expect(value()).toEqual({ failed: "recording" });
  });

  it("a held task is due by the wall clock: the stall clock waits for the wall clock, however far it was stepped from the job's", () => {
    // Its last held task due at 10 s on the wall clock; the wall clock then stepped back a minute.
    const { actor, value } = start({ dueUntil: 10_000, settings: { stallAfterMs: 1000 } });
    actor.send(committed(0));
    actor.send({ type: "clock.tick", now: 20_000, wallAhead: -60_000 });
    expect(value()).toBe("running"); // -40 s on the wall clock: not due yet
    actor.send({ type: "clock.tick", now: 70_999, wallAhead: -60_000 });
    expect(value()).toBe("running");
    actor.send({ type: "clock.tick", now: 71_000, wallAhead: -60_000 });
    expect(value()).toBe("stalled"); // due at 70 s on the job's clock, a stall window before
  });

  it("stalledTimeoutMs 0 never fails a stalled job", () => {
    const { actor, value } = start({ settings: { stallAfterMs: 1000, stalledTimeoutMs: 0 } });
    actor.send(committed(0));
    actor.send(tick(1000));
    actor.send(tick(1_000_000_000));
    expect(value()).toBe("stalled");
  });

  it("a job with nothing left to answer does not stall", () => {
    const { actor, value } = start({ total: 1, resumeFrom: "running", settings: { stallAfterMs: 10 } });
    // Resumed with every task answered but the end not yet seen: the next answer ends it, never a stall.
    actor.send(tick(5));
    expect(value()).toBe("running");
  });
});

describe("job machine: how a job ends", () => {
  it("succeeds within the tolerance and says so to finalize", () => {
    const { actor, value, inputs } = start({ total: 3, settings: { maxFailures: 0.34 } });
    actor.send(committed(0));
    actor.send(results([...ok(0, 1), { i: 2, ok: false }], 10));
    expect(value()).toEqual({ succeeded: "recording" });
    expect(inputs.finalize).toEqual([
      {
        jobId: "j1",
        queue: "images",
        status: "succeeded",
        reason: null,
        counts: { done: 2, failed: 1, dead: 0 },
      },
    ]);
  });

  it("fails past the tolerance, naming the count, the total and the tolerance", () => {
    const { actor, value, ctx } = start({ total: 4, settings: { maxFailures: 0.25 } });
    actor.send(committed(0));
    actor.send(results([{ i: 0, ok: false }, { i: 1, ok: false, dead: true }, ...ok(2, 3)], 10));
    expect(value()).toEqual({ failed: "recording" });
    expect(ctx().reason).toBe("2 of 4 tasks failed or died (tolerance 0.25)");
  });

  it("a stalled job whose last answer is a failure past the tolerance fails with the tolerance reason", () => {
    const { actor, value, ctx } = start({ total: 1, settings: { stallAfterMs: 100 } });
    actor.send(committed(0));
    actor.send(tick(100));
    expect(value()).toBe("stalled");
    actor.send(results([{ i: 0, ok: false }], 150));
    expect(value()).toEqual({ failed: "recording" });
    expect(ctx().reason).toBe("1 of 1 tasks failed or died (tolerance 0)");
  });

  it("a cancel ends a queuing, a running and a stalled job with the caller's reason", () => {
    const queuing = start();
    queuing.actor.send({ type: "job.cancel", reason: "user asked" });
    expect(queuing.value()).toEqual({ failed: "recording" });
    expect(queuing.ctx().reason).toBe("cancelled: user asked");

    const running = start();
    running.actor.send(committed(0));
    running.actor.send({ type: "job.cancel", reason: "shutdown" });
    expect(running.ctx().reason).toBe("cancelled: shutdown");
    expect(running.inputs.finalize[0]).toMatchObject({ status: "failed", reason: "cancelled: shutdown" });

    const stalled = start({ settings: { stallAfterMs: 10 } });
    stalled.actor.send(committed(0));
    stalled.actor.send(tick(10));
    stalled.actor.send({ type: "job.cancel", reason: "late" });
    expect(stalled.value()).toEqual({ failed: "recording" });
    expect(stalled.ctx().reason).toBe("cancelled: late");
  });

  it("a failed submit says why, for an Error and for anything else thrown", () => {
    const error = start();
    error.actor.send({ type: "submit.failed", error: new Error("stream gone") });
    expect(error.value()).toEqual({ failed: "recording" });
    expect(error.ctx().reason).toBe("submit failed: stream gone");

    const text = start();
    text.actor.send({ type: "submit.failed", error: "refused" });
    expect(text.ctx().reason).toBe("submit failed: refused");
  });

  it("the end is recorded once finalize settles", () => {
    for (const status of ["succeeded", "failed"] as const) {
      const job = start({ total: 1, settings: { maxFailures: 0 } });
      job.actor.send(committed(0));
      job.actor.send(results([{ i: 0, ok: status === "succeeded" }], 10));
      expect(job.value()).toEqual({ [status]: "recording" });
      job.actor.send({ type: "finalize.settled" });
      expect(job.value()).toEqual({ [status]: "recorded" });
    }
  });
});

describe("job machine: start and resume", () => {
  it("hands its submit the job id; its clock ticks every stallAfterMs / 4, between 20 ms and 1 s", () => {
    const cases: [number, number][] = [
      [60_000, 1000],
      [4000, 1000],
      [200, 50],
      [80, 20],
      [40, 20],
    ];
    for (const [stallAfterMs, everyMs] of cases) {
      const { inputs } = start({ settings: { stallAfterMs } });
      expect(tickEveryMs({ stallAfterMs })).toBe(everyMs);
      expect(inputs.submit).toEqual([{ jobId: "j1" }]);
    }
  });

  it("starts from a blank slate", () => {
    const { ctx, value } = start({ total: 17, now: 1234 });
    expect(value()).toEqual({ queuing: "submitting" });
    expect(ctx()).toMatchObject({
      jobId: "j1",
      queue: "images",
      total: 17,
      done: 0,
      failed: 0,
      dead: 0,
      startedAt: 1234,
      lastProgressAt: 1234,
      now: 1234,
      stalledSince: null,
      throughput: 0,
      throughputAt: null,
      rateTasks: 0,
      rateMs: 0,
      etaMs: null,
      reason: null,
      resumeFrom: null,
    });
    expect(ctx().answered).toHaveLength(3);
    // No task dead: the empty bitmap every such job shares (job-heap-retention.test.ts).
    expect(ctx().deadBits).toHaveLength(0);
  });

  it("resumes a running job as running and a stalled one as stalled, without submitting again", () => {
    for (const resumeFrom of ["running", "stalled"] as const) {
      const { value, inputs, ctx } = start({
        resumeFrom,
        counts: { done: 4, failed: 0, dead: 0 },
        ...(resumeFrom === "stalled" ? { stalledSince: 0 } : {}),
      });
      expect(value()).toBe(resumeFrom);
      expect(inputs.submit).toEqual([]);
      // An active job rebuilds its counts by replaying its results, not from the record.
      expect(ctx().done).toBe(0);
    }
  });

  it("a job resumed stalled (a takeover, a watcher) stays stalled since the record's stall: its replay is no progress, its timeout counts from then", () => {
    // The record, written at the stall, counted two answers.
    const resumed = () =>
      start({
        resumeFrom: "stalled",
        stalledSince: 50_000,
        now: 60_000,
        counts: { done: 2, failed: 0, dead: 0 },
        settings: { stallAfterMs: 10_000, stalledTimeoutMs: 20_000 },
      });
    const job = resumed();
    expect(job.value()).toBe("stalled");
    // Its last progress was a stallAfterMs before the stall at the latest.
    expect(job.ctx()).toMatchObject({ stalledSince: 50_000, lastProgressAt: 40_000 });
    job.actor.send(results(ok(0, 1), 61_000, true));
    expect(job.value()).toBe("stalled");
    expect(job.ctx().done).toBe(2);
    job.actor.send({ type: "clock.tick", now: 69_999 });
    expect(job.value()).toBe("stalled");
    job.actor.send({ type: "clock.tick", now: 70_000 });
    expect(job.value()).toEqual({ failed: "recording" });
    expect(job.ctx().reason).toBe("stalled: no progress for 30000 ms with 8 tasks left");
    // A new answer after the resume is progress: running again.
    const answered = resumed();
    answered.actor.send(results(ok(0), 62_000));
    expect(answered.value()).toBe("running");
    // So is a replayed answer the record did not have: given after the stall, while nobody counted.
    const since = resumed();
    since.actor.send(results(ok(0, 1, 2), 61_000, true));
    expect(since.value()).toBe("running");
    expect(since.ctx().lastProgressAt).toBe(61_000);
  });

  it("a stall stamped ahead of this host's clock (its writer's clock ahead) counts its timeout from now, not from then", () => {
    // Written by a host an hour ahead: taken as is, the job would stay stalled an hour longer.
    const job = start({
      resumeFrom: "stalled",
      stalledSince: 3_660_000,
      now: 60_000,
      counts: { done: 2, failed: 0, dead: 0 },
      settings: { stallAfterMs: 10_000, stalledTimeoutMs: 20_000 },
    });
    expect(job.ctx()).toMatchObject({ stalledSince: 60_000, lastProgressAt: 50_000 });
    job.actor.send({ type: "clock.tick", now: 79_999 });
    expect(job.value()).toBe("stalled");
    job.actor.send({ type: "clock.tick", now: 80_000 });
    expect(job.value()).toEqual({ failed: "recording" });
  });

  it("a finished job being looked at keeps its counts and reason, and finalizes nothing", () => {
    const done = start({ resumeFrom: "succeeded", counts: { done: 9, failed: 1, dead: 0 } });
    expect(done.value()).toEqual({ succeeded: "recorded" });
    expect(done.ctx()).toMatchObject({ done: 9, failed: 1, dead: 0 });
    expect(done.inputs.finalize).toEqual([]);

    const failed = start({
      resumeFrom: "failed",
      counts: { done: 1, failed: 0, dead: 2 },
      reason: "cancelled: x",
    });
    expect(failed.value()).toEqual({ failed: "recorded" });
    expect(failed.ctx()).toMatchObject({ done: 1, failed: 0, dead: 2, reason: "cancelled: x" });
    expect(failed.inputs.submit).toEqual([]);

    const noCounts = start({ resumeFrom: "succeeded" });
    expect(noCounts.ctx()).toMatchObject({ done: 0, failed: 0, dead: 0 });
  });
});

describe("job machine: its own placeholder actions", () => {
  it("without I/O provided, a job waits for its submit and for its end's write", () => {
    const actor = createActor(jobMachine, {
      input: { jobId: "j", queue: "q", total: 1, settings, now: 0 },
    }).start();
    expect(actor.getSnapshot().value).toEqual({ queuing: "submitting" });
    actor.send({ type: "job.cancel", reason: "x" });
    expect(actor.getSnapshot().value).toEqual({ failed: "recording" });
    actor.stop();
  });
});

describe("job machine: an end recorded elsewhere", () => {
  const changed = (
    status: "running" | "succeeded" | "failed",
    counts: { done: number; failed: number; dead: number },
    reason: string | null = null,
  ): JobEvent => ({
    type: "record.changed",
    status,
    counts,
    reason,
  });
  /** A running job with two tasks counted done here. */
  const twoDone = () => {
    const job = start();
    job.actor.send(committed(0));
    job.actor.send(results(ok(0, 1), 100));
    expect(job.ctx()).toMatchObject({ done: 2, failed: 0, dead: 0 });
    return job;
  };

  it("a fresh job has recorded nothing", () => {
    expect(start().ctx().recorded).toEqual({ done: 0, failed: 0, dead: 0 });
  });

  it("takes the record's counts when they add up to as many answers (1 done + 1 dead = 2)", () => {
    const job = twoDone();
    job.actor.send(changed("failed", { done: 1, failed: 0, dead: 1 }, "cancelled: ops"));
    expect(job.value()).toEqual({ failed: "recorded" });
    expect(job.ctx()).toMatchObject({ done: 1, failed: 0, dead: 1, reason: "cancelled: ops" });
    expect(job.ctx().recorded).toEqual({ done: 1, failed: 0, dead: 1 });
  });

  it("takes the record's counts when failed ones make up the sum (0 done + 2 failed = 2)", () => {
    const job = twoDone();
    job.actor.send(changed("failed", { done: 0, failed: 2, dead: 0 }));
    expect(job.ctx()).toMatchObject({ done: 0, failed: 2, dead: 0, reason: null });
  });

  it("keeps its own counts when the record has fewer answers (1 < 2), but remembers the record's", () => {
    const job = twoDone();
    job.actor.send(changed("succeeded", { done: 1, failed: 0, dead: 0 }, "theirs"));
    expect(job.value()).toEqual({ succeeded: "recorded" });
    expect(job.ctx()).toMatchObject({ done: 2, failed: 0, dead: 0, reason: "theirs" });
    expect(job.ctx().recorded).toEqual({ done: 1, failed: 0, dead: 0 });
  });

  it("another end recorded while this one is written is the job's, with the record's reason: a success has none", () => {
    const job = twoDone();
    job.actor.send({ type: "clock.tick", now: 60_100 });
    expect(job.value()).toBe("stalled");
    job.actor.send({ type: "job.cancel", reason: "mine" });
    expect(job.value()).toEqual({ failed: "recording" });
    job.actor.send(changed("succeeded", { done: 10, failed: 0, dead: 0 }));
    expect(job.value()).toEqual({ succeeded: "recorded" });
    expect(job.ctx()).toMatchObject({ done: 10, reason: null });
  });

  it("a record still running is remembered, the job goes on with its own counts", () => {
    const job = twoDone();
    job.actor.send(changed("running", { done: 1, failed: 1, dead: 0 }));
    expect(job.value()).toBe("running");
    expect(job.ctx()).toMatchObject({ done: 2, failed: 0, dead: 0 });
    expect(job.ctx().recorded).toEqual({ done: 1, failed: 1, dead: 0 });
  });
});
