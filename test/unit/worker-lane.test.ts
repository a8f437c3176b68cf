/**
 * A worker's lane loop (`api/worker-lane.ts`) and the tasks of a lane job of
 * several tasks that reach it before the job's commit. The oracle is a fake
 * broker's own ledger: the record reads asked of it, the tasks handed to
 * the worker's `onTask`, and what was done with each lease (termed,
 * released, its lease extended).
 */
import { describe, expect, it } from "vitest";
import type { RecordFound } from "../../src/adapters/job-records.ts";
import type { LaneLease } from "../../src/adapters/task-queue.ts";
import type { ActiveJob } from "../../src/api/running-tasks.ts";
import { laneLoop } from "../../src/api/worker-lane.ts";
import { LoopGroup } from "../../src/effects/loop-group.ts";
import { type JobRecord, laneMaxDeliver, SubmitPhase } from "../../src/kernel/job-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { waitUntil } from "../harness/wait.ts";

const record = (phase: JobRecord["phase"], status: JobRecord["status"]): JobRecord => ({
  v: 1,
  id: "j1",
  queue: "q",
  status,
  phase,
  total: 3,
  submitId: "s1",
  settings: {
    maxFailures: 0,
    ackWaitMs: 30_000,
    maxDeliver: 5,
    backoffMs: [],
    stallAfterMs: 60_000,
    stalledTimeoutMs: 0,
  },
  counts: { done: 0, failed: 0, dead: 0 },
  createdAt: 0,
  updatedAt: 0,
  commitDeadline: 30_000,
  lane: true,
});
const submitting = record(SubmitPhase.submitting, "queuing");
const committed = record(SubmitPhase.committed, "running");
const rolledBack = record(SubmitPhase.rolledBack, "failed");

/** A lease whose every call is written down. */
const lease = (n: number) => {
  const calls: string[] = [];
  const l: LaneLease = {
    jobId: "j1",
    body: JSON.stringify({ i: n, p: n }),
    deliveryCount: 1,
    seq: n + 1,
    ack: () => calls.push("ack"),
    nak: () => calls.push("nak"),
    handBack: () => calls.push("handBack"),
    term: () => calls.push("term"),
    putBack: async () => true,
    working: () => calls.push("working"),
  };
  return { lease: l, calls };
};

/** A lane loop over a fake broker whose record reads the test answers (the first `failing` fail at once). */
const loopOver = (failing = 0) => {
  const reads: Array<(found: RecordFound | undefined) => void> = [];
  let failed = 0;
  const ran: string[] = [];
  const released: LaneLease[] = [];
  const jobs = new Map<string, ActiveJob>();
  const pulling = new AbortController();
  let deliver: ((l: LaneLease) => void | Promise<void>) | undefined;
  const loop = laneLoop({
    broker: {
      getRecord: () =>
        failed++ < failing
          ? Promise.reject(new Error("the store has no leader"))
          : new Promise<RecordFound | undefined>((resolve) => reads.push(resolve)),
      consumeLane: async (_queue, _max, onTask, signal) => {
        deliver = onTask;
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        return "stopped";
      },
    },
    queue: "q",
    concurrency: 4,
    jobs,
    follow: (r, revision) => {
      const job = { record: r, revision } as unknown as ActiveJob;
      jobs.set(r.id, job);
      return job;
    },
    onTask: (msg) => {
      ran.push(msg.body);
    },
    release: (msg) => {
      released.push(msg as LaneLease);
    },
    payloadKnown: Promise.resolve(),
    pulling: pulling.signal,
    loops: new LoopGroup(silentLogger()),
    log: silentLogger(),
    name: "lane-test",
  });
  loop.pull();
  return {
    loop,
    reads,
    ran,
    released,
    pulling,
    /** Settles once the loop pulls the lane. */
    pulled: () => waitUntil(() => deliver !== undefined, { timeoutMs: 1000, message: "the lane pulled" }),
    /** Hands the loop a delivery, as the lane's consumer does. */
    deliver: (l: LaneLease) => deliver!(l),
  };
};

/** A lane loop holding two tasks of a job it heard is not committed yet. */
const twoHeld = async () => {
  const w = loopOver();
  await w.pulled();
  w.loop.heard(submitting, 1);
  const tasks = [lease(0), lease(1)];
  for (const t of tasks) void w.deliver(t.lease);
  await new Promise((resolve) => setTimeout(resolve, 20));
  return { w, tasks };
};

describe("a worker's lane loop and a lane job of several tasks", () => {
  it("its tasks that come together share one read of its record, are held, and run once each when its commit is heard", async () => {
    const w = loopOver();
    await w.pulled();
    const tasks = [lease(0), lease(1), lease(2)];
    const handed = tasks.map((t) => w.deliver(t.lease));
    await waitUntil(() => w.reads.length > 0, { timeoutMs: 1000, message: "the record read" });
    // Its three tasks, one read.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(w.reads).toHaveLength(1);
    w.reads[0]!({ record: submitting, revision: 1 });
    await Promise.all(handed);
    expect(w.ran).toEqual([]);
    expect(tasks.flatMap((t) => t.calls)).toEqual([]);
    // A fourth, while the job is known not committed: held, without another read.
    const late = lease(3);
    void w.deliver(late.lease);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(w.reads).toHaveLength(1);
    w.loop.heard(committed, 2);
    await waitUntil(() => w.ran.length === 4, { timeoutMs: 1000, message: "the held tasks run" });
    expect([...w.ran].sort()).toEqual([0, 1, 2, 3].map((n) => JSON.stringify({ i: n, p: n })).sort());
    expect([...tasks, late].flatMap((t) => t.calls)).toEqual([]);
    w.pulling.abort();
  });

  it("a job heard not committed yet: its tasks are held without a read, and released when it is rolled back", async () => {
    const { w, tasks } = await twoHeld();
    expect(w.reads).toHaveLength(0);
    w.loop.heard(rolledBack, 2);
    // Released, not termed: a rollback heard late may come after the next submit of the key
    // published tasks this worker holds under the same id (the rollback removes its own).
    expect(w.released.map((l) => l.seq)).toEqual([1, 2]);
    expect(tasks.flatMap((t) => t.calls)).toEqual([]);
    expect(w.ran).toEqual([]);
    w.pulling.abort();
  });

  it("the tasks held of a job next heard over (its commit and its end heard as one) are removed", async () => {
    const { w, tasks } = await twoHeld();
    w.loop.heard({ ...committed, status: "failed", reason: "cancelled" }, 2);
    expect(tasks.map((t) => t.calls)).toEqual([["term"], ["term"]]);
    expect(w.ran).toEqual([]);
    expect(w.released).toEqual([]);
    w.pulling.abort();
  });

  it("holding as many tasks as it has slots, the loop takes the next once some are settled, or a second on", async () => {
    const w = loopOver();
    await w.pulled();
    w.loop.heard(submitting, 1);
    let waited = 0;
    const handed = [0, 1, 2, 3].map((n) => {
      const handing = w.deliver(lease(n).lease);
      if (handing) void handing.then(() => waited++);
      return handing;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    // Four slots: the fourth task held makes the loop wait; the three before did not.
    expect(waited).toBe(3);
    w.loop.heard(committed, 2);
    await Promise.all(handed);
    expect(w.ran).toHaveLength(4);
    // Held again to the brim for a job that never commits: the loop goes on a second later.
    const other = { ...submitting, id: "j2" };
    w.loop.heard(other, 3);
    const started = Date.now();
    const last = [0, 1, 2, 3].map((n) => w.deliver({ ...lease(n).lease, jobId: "j2" })).at(-1);
    await last;
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    w.pulling.abort();
  });

  it("a task whose job's record cannot be read is held, spending no delivery, and runs once a read finds its job", async () => {
    const w = loopOver(2);
    await w.pulled();
    const task = lease(0);
    const handed = w.deliver(task.lease);
    await handed;
    // Not released (a nak spends a delivery), not run: held while its record is read again.
    expect(w.released).toEqual([]);
    expect(task.calls).toEqual([]);
    expect(w.ran).toEqual([]);
    // Read again at once, which fails too; the third read, a second (±20 %) on, is answered.
    await waitUntil(() => w.reads.length === 1, { timeoutMs: 6000, message: "the record read again" });
    expect(w.released).toEqual([]);
    w.reads[0]!({ record: committed, revision: 2 });
    await waitUntil(() => w.ran.length === 1, { timeoutMs: 1000, message: "the held task run" });
    expect(task.calls).toEqual([]);
    w.pulling.abort();
  });

  it("tasks whose jobs cannot be read are held up to the worker's slots; past them released, as before", async () => {
    const w = loopOver(1000);
    await w.pulled();
    const tasks = ["a", "b", "c", "d", "e"].map((jobId, n) => ({ ...lease(n).lease, jobId }));
    for (const task of tasks.slice(0, 4)) void w.deliver(task);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(w.released).toEqual([]);
    // Four slots, four held: the fifth goes back, the lane loop not slowed for it.
    await w.deliver(tasks[4]!);
    expect(w.released.map((l) => l.jobId)).toEqual(["e"]);
    // One on its last delivery (the lane's fifth) is held all the same: released, it would die unrun.
    void w.deliver({ ...lease(5).lease, jobId: "f", deliveryCount: laneMaxDeliver });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(w.released.map((l) => l.jobId)).toEqual(["e"]);
    w.pulling.abort();
    expect(w.released.map((l) => l.jobId).sort()).toEqual(["a", "b", "c", "d", "e", "f"]);
  });

  it("a task whose job's read fails while the watch hands its record over goes by that record", async () => {
    const w = loopOver(1);
    await w.pulled();
    const failing = w.deliver(lease(0).lease);
    // The watch hands the committed record over while the read is out (it fails after).
    w.loop.heard(committed, 2);
    await failing;
    expect(w.ran).toHaveLength(1);
    expect(w.released).toEqual([]);
    w.pulling.abort();
  });

  it("a worker that stops releases the tasks it holds, unrun", async () => {
    const { w } = await twoHeld();
    w.pulling.abort();
    expect(w.released.map((l) => l.seq)).toEqual([1, 2]);
    expect(w.ran).toEqual([]);
  });
});
