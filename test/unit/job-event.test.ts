/**
 * Record revisions → job events (src/kernel/job-event.ts). Each case writes
 * a job's revisions by hand, as the writers of src/effects/ write them
 * (submit, commit, progress at most once a second, stall, end, cancel,
 * redrive, rollback), and the events expected, type by type, written out here.
 */
import { describe, expect, it } from "vitest";
import { type JobEvent, JobEventTranslator } from "../../src/kernel/job-event.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";

const base: JobRecord = {
  v: 1,
  id: "job-1",
  queue: "q",
  status: "queuing",
  phase: "submitting",
  total: 4,
  submitId: "s1",
  settings: {
    maxFailures: 0,
    ackWaitMs: 30_000,
    maxDeliver: 5,
    backoffMs: [0],
    stallAfterMs: 60_000,
    stalledTimeoutMs: 0,
  },
  counts: { done: 0, failed: 0, dead: 0 },
  createdAt: 100,
  updatedAt: 100,
  commitDeadline: 30_100,
};

/** The job's revisions, in the order the writers of src/effects/ make them. */
const rev = {
  submitting: base,
  committed: { ...base, phase: "committed", status: "running", updatedAt: 150 } as JobRecord,
  progress: (done: number, at: number): JobRecord => ({
    ...rev.committed,
    counts: { done, failed: 0, dead: 0 },
    updatedAt: at,
  }),
  stalled: (done: number, at: number): JobRecord => ({ ...rev.progress(done, at), status: "stalled" }),
  succeeded: (at: number): JobRecord => ({
    ...rev.progress(4, at),
    status: "succeeded",
    finishedAt: at,
  }),
  failed: (dead: number, at: number, reason = "too many failures"): JobRecord => ({
    ...rev.committed,
    status: "failed",
    counts: { done: 4 - dead, failed: 0, dead },
    reason,
    updatedAt: at,
    finishedAt: at,
  }),
  rolledBack: { ...base, phase: "rolledBack", status: "failed", reason: "submit failed: x" } as JobRecord,
};

const run = (records: JobRecord[], translator = new JobEventTranslator()): JobEvent[] =>
  records.flatMap((r) => translator.translate(r));
const types = (events: JobEvent[]) => events.map((e) => e.type);

describe("job events from record revisions", () => {
  it("a whole life: created, progress, stalled, progress again, succeeded, with the record's data", () => {
    const events = run([
      rev.submitting,
      rev.committed,
      rev.progress(1, 1200),
      rev.progress(2, 2200),
      rev.stalled(2, 70_000),
      rev.progress(3, 71_000),
      rev.succeeded(72_000),
    ]);
    expect(types(events)).toEqual(["created", "progress", "progress", "stalled", "progress", "succeeded"]);
    expect(events[0]).toEqual({
      type: "created",
      jobId: "job-1",
      queue: "q",
      status: "running",
      total: 4,
      counts: { done: 0, failed: 0, dead: 0 },
      at: 100,
    });
    expect(events.map((e) => [e.status, e.counts.done, e.at])).toEqual([
      ["running", 0, 100],
      ["running", 1, 1200],
      ["running", 2, 2200],
      ["stalled", 2, 70_000],
      ["running", 3, 71_000],
      ["succeeded", 4, 72_000],
    ]);
  });

  it("an end written again (the same end, other counts or a later write) is delivered once", () => {
    const end = rev.failed(2, 5000);
    const events = run([
      rev.submitting,
      rev.committed,
      end,
      end,
      { ...end, counts: { done: 3, failed: 0, dead: 1 }, updatedAt: 6000 },
    ]);
    expect(types(events)).toEqual(["created", "failed"]);
    expect(events[1]).toMatchObject({ reason: "too many failures", counts: { dead: 2 }, at: 5000 });
  });

  it("a cancel is `cancelled`, with its reason; any other failure stays `failed`", () => {
    const cancelled = run([rev.submitting, rev.committed, rev.failed(0, 900, "cancelled: by test")]);
    expect(cancelled.map((e) => [e.type, e.status, e.reason])).toEqual([
      ["created", "running", undefined],
      ["cancelled", "failed", "cancelled: by test"],
    ]);
    const lost = run([rev.committed, rev.failed(0, 900, "tasks lost: the job's consumer is gone")]);
    expect(types(lost)).toEqual(["created", "failed"]);
  });

  it("a reader that fell behind (only a key's latest revision kept) still gets created before the end", () => {
    expect(types(run([rev.submitting, rev.succeeded(3000)]))).toEqual(["created", "succeeded"]);
    expect(types(run([rev.submitting, rev.progress(2, 2000)]))).toEqual(["created", "progress"]);
    expect(types(run([rev.submitting, rev.stalled(0, 2000)]))).toEqual(["created", "stalled"]);
  });

  it("a job first seen after it started: no created, its change only", () => {
    expect(types(run([rev.progress(2, 2000), rev.progress(3, 3000)]))).toEqual(["progress", "progress"]);
    expect(types(run([rev.stalled(2, 2000)]))).toEqual(["stalled"]);
    expect(types(run([rev.succeeded(3000)]))).toEqual(["succeeded"]);
    // The commit's own write (running, nothing answered) is the commit, seen or not before.
    expect(types(run([rev.committed]))).toEqual(["created"]);
  });

  it("a write that looks like the commit but comes after its deadline is no created (a reader that never saw the job)", () => {
    // The redrive of a job every task of which died: running, nothing answered, no end. Or a
    // consumer restore's touch of a job nobody answered yet. The commit is written before its
    // deadline (30 s after the submit); these come later.
    const redriven: JobRecord = { ...rev.committed, updatedAt: 90_000 };
    expect(types(run([redriven]))).toEqual(["progress"]);
    // The commit itself, up to its deadline, still is.
    expect(types(run([{ ...rev.committed, updatedAt: base.commitDeadline }]))).toEqual(["created"]);
  });

  it("a redrive reopens the job (`reopened`), and its next end is delivered too", () => {
    const first = rev.failed(2, 5000);
    const reopened: JobRecord = {
      ...rev.committed,
      counts: { done: 2, failed: 0, dead: 0 },
      updatedAt: 6000,
    };
    const second = rev.succeeded(7000);
    expect(types(run([rev.committed, first, reopened, second, second]))).toEqual([
      "created",
      "failed",
      "reopened",
      "succeeded",
    ]);
    // Reopened and ended again while the reader fell behind: the second end is another end.
    expect(types(run([rev.committed, first, second]))).toEqual(["created", "failed", "succeeded"]);
  });

  it("a submit rolled back is no job; the same id submitted again is created", () => {
    expect(run([rev.submitting, rev.rolledBack])).toEqual([]);
    const translator = new JobEventTranslator();
    expect(types(run([rev.submitting, rev.rolledBack, rev.submitting, rev.committed], translator))).toEqual([
      "created",
    ]);
  });

  it("the key's job made again under its id (another submit) is another job: created, not reopened", () => {
    // Its commit write seen, after the job remembered had ended (or while it ran).
    const again = (record: JobRecord): JobRecord => ({ ...record, submitId: "s2", createdAt: 9000 });
    const commit = again({ ...rev.committed, updatedAt: 9100, commitDeadline: 39_000 });
    expect(types(run([rev.committed, rev.failed(2, 5000), commit, again(rev.succeeded(9500))]))).toEqual([
      "created",
      "failed",
      "created",
      "succeeded",
    ]);
    expect(types(run([rev.committed, rev.progress(2, 1000), commit]))).toEqual([
      "created",
      "progress",
      "created",
    ]);
    // The same submit's redrive stays `reopened` (above).
  });

  it("a take's write of the commit's record (naming its taker, the commit's time kept) is no created, and no event", () => {
    const taken: JobRecord = { ...rev.committed, supervisor: "rt-b" };
    // First seen there: the job was created before the reader started; nothing changed.
    expect(types(run([taken, rev.succeeded(3000)]))).toEqual(["succeeded"]);
    // Known before: the take changed nothing a reader sees.
    expect(types(run([rev.committed, taken]))).toEqual(["created"]);
    // A taker's write of a lane job's commit, its submitting revision seen: created.
    expect(types(run([rev.submitting, taken]))).toEqual(["created"]);
    // A take of a record with answers, first seen: its progress, as any job first seen.
    expect(types(run([{ ...rev.progress(2, 2000), supervisor: "rt-b" }]))).toEqual(["progress"]);
  });

  it("nothing for a write that changes nothing a reader sees", () => {
    expect(types(run([rev.committed, rev.progress(1, 1000), rev.progress(1, 1100)]))).toEqual([
      "created",
      "progress",
    ]);
    expect(types(run([rev.committed, rev.stalled(0, 1000), rev.stalled(0, 1100)]))).toEqual([
      "created",
      "stalled",
    ]);
  });

  it("remembers at most `capacity` jobs, the least recently changed forgotten first", () => {
    const translator = new JobEventTranslator(2);
    const job = (id: string) => ({ ...rev.failed(1, 5000), id });
    const ends = ["a", "b", "c"].flatMap((id) => translator.translate(job(id)));
    expect(ends.map((e) => e.jobId)).toEqual(["a", "b", "c"]);
    expect(translator.remembered).toBe(2);
    // b and c are remembered: their ends are not repeated; a was forgotten, so its end is news again.
    expect(
      [job("b"), job("c"), job("a")].flatMap((r) => translator.translate(r)).map((e) => e.jobId),
    ).toEqual(["a"]);
    expect(translator.remembered).toBe(2);
  });
});
