import { describe, expect, it } from "vitest";
import type { JobHandle, JobSnapshot } from "../../src/api/job-handle.ts";
import { jobActorOf } from "../../src/api/runtime-job-handle.ts";
import type { TaskContext, Worker } from "../../src/api/workers.ts";
import { ManualClock } from "../../src/kernel/clock.ts";
import {
  describeOnBothBenches,
  type FaultyRuntime,
  type RawResult,
  tally,
} from "../harness/fault-runtimes.ts";
import { gate, waitUntil } from "../harness/wait.ts";

/**
 * Faults as first-class events (issue #13): the broker port fails the way an
 * outage would — a results publish, the write of a job's end, a lease
 * renewal, an ack after a stored result, the commit of a submit — and each
 * job must end as docs/architecture.md promises: retried, never hanging,
 * never counted twice. Each is run on both brokers. The oracles are the
 * handler's own ledger and what the server holds, read raw; never
 * `results()` or the runtime's word about itself.
 */

/** Longest a faulted job may take to end here; far below the 60 s a test may take. */
const BOUND_MS = 15_000;
/** What a healthy small job takes at most here, with room for a loaded machine. */
const QUICK_MS = 8_000;

/** Settles like `promise`, or rejects saying what did not happen within `ms`. */
const within = <T>(promise: Promise<T>, ms: number, what: string): Promise<T> => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
};

const indexes = (n: number) => Array.from({ length: n }, (_, i) => i);
const okIndexes = (raw: readonly RawResult[]) => raw.filter((r) => r.ok).map((r) => r.i);

describeOnBothBenches("faults on the %s broker", (use) => {
  const runtime = use.runtime;

  /** A worker that writes every task it handles into `ledger` (index per call). */
  const worker = (
    r: FaultyRuntime,
    queue: string,
    ledger: number[],
    handle: (index: number, ctx: TaskContext) => unknown = (i) => i * 10,
  ): Worker => {
    const w = r.rt.workers.start<number, unknown>({
      queue,
      concurrency: 8,
      stopTimeoutMs: 2000,
      handler: async (task, ctx) => {
        ledger.push(task.index);
        return handle(task.index, ctx);
      },
    });
    use.after(() => w.stop());
    return w;
  };

  /** The job's end as the supervisor wrote it, read from the record store. */
  const finalRecord = async (r: FaultyRuntime, jobId: string) => {
    let found: Awaited<ReturnType<typeof r.broker.getRecord>>;
    await waitUntil(
      async () => {
        found = await r.broker.getRecord(jobId);
        return found?.record.status === "succeeded" || found?.record.status === "failed";
      },
      { timeoutMs: BOUND_MS, message: `the record of ${jobId} to say how the job ended` },
    );
    return found!.record;
  };

  /** Every task counted exactly once: by the job, by its record and in the stored results. */
  const expectCountedOnce = async (r: FaultyRuntime, job: JobSnapshot, total: number) => {
    expect(job).toMatchObject({ status: "succeeded", done: total, failed: 0, dead: 0 });
    const record = await finalRecord(r, job.id);
    expect(record.counts).toEqual({ done: total, failed: 0, dead: 0 });
    const stored = tally(okIndexes(await use.bench.rawResults(job.queue, job.id)));
    expect([...stored.keys()].sort((a, b) => a - b)).toEqual(indexes(total));
    return stored;
  };

  /**
   * A job of 4 tasks on `queue`, handled by `r`'s worker into `ledger`, whose end `r` decided
   * (`succeeded`) and could not write: every write of a job's end fails there, as `kind` says.
   * What a subscriber of its handle hears from the submit on goes into `heard` (status and
   * reason; none subscribes without it).
   */
  const endNotWritten = async (
    r: FaultyRuntime,
    queue: string,
    ledger: number[],
    kind: "transient" | "permanent" = "transient",
    heard?: string[],
  ) => {
    r.faults.fail("finalize", Number.POSITIVE_INFINITY, undefined, kind);
    worker(r, queue, ledger);
    const job = await r.rt.jobs.submit({ queue, tasks: indexes(4) });
    if (heard) job.subscribe((snapshot) => heard.push(`${snapshot.status} ${snapshot.reason ?? ""}`.trim()));
    await waitUntil(() => r.faults.injected("finalize") > 0, {
      timeoutMs: BOUND_MS,
      message: "the write of the job's end to fail",
    });
    return job;
  };

  /** `r` writes a cancel of the job raw, from a view that counted none of its answers; the status it replaced. */
  const cancelFromNone = async (r: FaultyRuntime, jobId: string, reason: string) => {
    const found = (await r.broker.getRecord(jobId))!;
    const now = Date.now();
    await r.broker.updateRecord(
      {
        ...found.record,
        status: "failed",
        reason,
        counts: { done: 0, failed: 0, dead: 0 },
        updatedAt: Math.max(now, found.record.updatedAt + 1),
        finishedAt: now,
      },
      found.revision,
    );
    return found.record.status;
  };

  describe("a results publish that fails", () => {
    it.each([
      ["once", 1],
      ["3 times", 3],
    ])("%s: the tasks are released and answered again; each counted once", async (_name, times) => {
      const r = await runtime();
      const total = 12;
      const ledger: number[] = [];
      r.faults.fail("publishResults", times);
      worker(r, "pub-fails", ledger);
      // A job whose answers are lost for good stalls, then fails: seconds, not a hang.
      const job = await r.rt.jobs.submit({
        queue: "pub-fails",
        tasks: indexes(total),
        backoff: [20],
        stallAfterMs: 2000,
        stalledTimeoutMs: 3000,
      });
      const end = await within(job.done(), BOUND_MS, "job with failing result publishes to end");

      expect(r.faults.injected("publishResults")).toBe(times);
      const stored = await expectCountedOnce(r, end, total);
      // A failed publish stored nothing: every index is in exactly one stored message...
      expect([...stored.values()].every((n) => n === 1)).toBe(true);
      // ...and the tasks of the failed batches were handled again.
      const handled = tally(ledger);
      expect(indexes(total).every((i) => (handled.get(i) ?? 0) >= 1)).toBe(true);
      expect(ledger.length).toBeGreaterThan(total);
    });

    it("permanently: the job stalls, then fails after stalledTimeoutMs; nothing stored", async () => {
      const r = await runtime();
      const ledger: number[] = [];
      r.faults.fail("publishResults", Number.POSITIVE_INFINITY);
      worker(r, "pub-dead", ledger);
      const job = await r.rt.jobs.submit({
        queue: "pub-dead",
        tasks: indexes(4),
        backoff: [50],
        maxDeliver: 1000,
        stallAfterMs: 300,
        stalledTimeoutMs: 300,
      });
      const seen: string[] = [];
      job.subscribe((s) => seen.push(s.status));
      const end = await within(job.done(), BOUND_MS, "job whose results are never stored to end");

      expect(end).toMatchObject({ status: "failed", done: 0 });
      expect(end.reason).toMatch(/^stalled/);
      expect(seen).toContain("stalled");
      expect(ledger.length).toBeGreaterThan(0);
      expect(await use.bench.rawResults(job.queue, job.id)).toEqual([]);
      expect((await finalRecord(r, job.id)).status).toBe("failed");
    });
  });

  /** A job of 4 tasks on `queue`, which nobody pulls: it stalls, and fails 300 ms on with its tasks left. */
  const stallingJob = async (r: FaultyRuntime, queue: string): Promise<JobHandle> => {
    const job = await r.rt.jobs.submit({
      queue,
      tasks: indexes(4),
      stallAfterMs: 100,
      stalledTimeoutMs: 200,
    });
    expect(await use.bench.rawTasks(queue, job.id)).toBe(4);
    return job;
  };

  it("a finalize that fails: the job still ends, and its end is written on the retry", async () => {
    const r = await runtime({ jobs: { leaseMs: 400 } });
    const total = 6;
    const ledger: number[] = [];
    r.faults.fail("finalize", 1);
    worker(r, "fin-fails", ledger);
    const job = await r.rt.jobs.submit({ queue: "fin-fails", tasks: indexes(total) });
    // Six tasks and one failed write: this ends in well under a second when nothing hangs.
    const end = await within(job.done(), QUICK_MS, "job whose finalize fails to end");

    expect(r.faults.injected("finalize")).toBe(1);
    // The record still said running: the job's actor wrote its end on its next try.
    await expectCountedOnce(r, end, total);
    expect(tally(ledger).size).toBe(total);
  });

  // Transient: A's actor tries its write again until the cancel is heard. Permanent: A's actor
  // ends with its end unwritten (its handle waits for the record's end), each takeover of A's
  // too, until the cancel is written.
  it.each(["transient", "permanent"] as const)(
    "an end not written (%s), then a cancel from another process: done() says the end recorded",
    async (kind) => {
      const a = await runtime({ jobs: { leaseMs: 400 } });
      // Never a supervisor: the end is A's to write, or the cancel's.
      const b = await runtime({ jobs: { leaseMs: 400, takeOver: false } });
      const total = 4;
      const ledger: number[] = [];
      const seen: string[] = [];
      const job = await endNotWritten(a, "fin-cancel", ledger, kind, seen);
      const done = job.done();
      // Decided, not written: the job is not over, and its handle does not say it is.
      expect(job.snapshot()).toMatchObject({ status: "running", reason: null, done: total });
      const elsewhere = await b.rt.jobs.get(job.id);
      const cancelled = await within(elsewhere!.cancel("from elsewhere"), BOUND_MS, "B's cancel");
      expect(cancelled).toMatchObject({ status: "failed", reason: "cancelled: from elsewhere" });
      a.faults.heal("finalize");

      const record = await finalRecord(a, job.id);
      expect(record).toMatchObject({ status: "failed", reason: "cancelled: from elsewhere" });
      // What A's handle says is the record's end, not the one A decided and never wrote.
      const end = await within(done, BOUND_MS, "A's view of the job to end");
      expect(end).toMatchObject({ status: "failed", reason: "cancelled: from elsewhere", done: total });
      // Its snapshot and its subscribers too, whose one end is the recorded one: never the
      // `succeeded` A decided and could not write.
      expect(job.snapshot()).toMatchObject({ status: "failed", reason: "cancelled: from elsewhere" });
      await waitUntil(() => seen.at(-1) === "failed cancelled: from elsewhere", {
        timeoutMs: QUICK_MS,
        message: `A's subscriber to hear the end recorded (heard: ${seen.join(", ")})`,
      });
      expect(seen).not.toContain("succeeded");
      // One subscribing once the job is over hears that end too.
      const late = await new Promise<JobSnapshot>((resolve) => job.subscribe(resolve));
      expect(late).toMatchObject({ status: "failed", reason: "cancelled: from elsewhere" });
      expect(tally(ledger).size).toBe(total);
    },
  );

  it("an end not written for good, then a cancel through the job's own handle: its snapshot says that cancel", async () => {
    const a = await runtime({ jobs: { leaseMs: 400, takeOver: false } });
    const job = await endNotWritten(a, "fin-own-cancel", [], "permanent");
    await waitUntil(() => jobActorOf(job).getSnapshot().status !== "active", {
      timeoutMs: BOUND_MS,
      message: "A's actor to end with its end not written",
    });
    // (No snapshot before the cancel: it would start the handle's wait for the record's end,
    // whose watch may hear the cancel first.) The store writes again; the cancel is the first
    // write of an end there.
    a.faults.heal("finalize");
    const cancelled = await within(job.cancel("own"), BOUND_MS, "the cancel");
    expect(cancelled).toMatchObject({ status: "failed", reason: "cancelled: own", done: 4 });
    // At once: the cancel read (and wrote) the record's end.
    expect(job.snapshot()).toMatchObject({ status: "failed", reason: "cancelled: own" });
    // With the answers A counted: its progress was never written either.
    expect(await finalRecord(a, job.id)).toMatchObject({
      status: "failed",
      reason: "cancelled: own",
      counts: { done: 4, failed: 0, dead: 0 },
    });
  });

  it("an end not written for good, then its record made again by another submit of its key: its handles say it lost, and its cancel writes nothing", async () => {
    const a = await runtime({ jobs: { leaseMs: 400, takeOver: false } });
    const job = await endNotWritten(a, "fin-made-again", [], "permanent");
    await waitUntil(() => jobActorOf(job).getSnapshot().status !== "active", {
      timeoutMs: BOUND_MS,
      message: "A's actor to end with its end not written",
    });
    // The store lost the record, and another submit of the key made it again (written raw).
    // Asked before, `done()` could read the store between the two writes: no record left, so
    // the end A decided (a store back empty, that no submit made again).
    const found = (await a.broker.getRecord(job.id))!;
    await a.broker.deleteRecord(job.id, found.revision);
    const made = { ...found.record, submitId: "again", updatedAt: Date.now() + 1 };
    await a.broker.createRecord(made);
    const done = job.done();
    a.faults.heal("finalize");
    const lost = { status: "failed", reason: expect.stringContaining("submitted again (submit again)") };
    expect(await within(done, BOUND_MS, "A's view of the job to end")).toMatchObject(lost);
    expect(await within(job.cancel("stale"), BOUND_MS, "the cancel")).toMatchObject(lost);
    expect(job.snapshot()).toMatchObject(lost);
    // The new job's record as it was made: nothing of the lost job's written onto it.
    const after = (await a.broker.getRecord(job.id))!;
    expect(after.record).toEqual(made);
    // Gone, so that no later test's runtime takes the made-up job over.
    await a.broker.deleteRecord(job.id, after.revision);
  });

  // The raise is itself a write: one that fails as in an outage is tried again.
  it.each([0, 2])(
    "a cancel written from fewer answers between two tries of the end gets the answers counted (%i raises fail)",
    async (raiseFails) => {
      const a = await runtime({ jobs: { leaseMs: 400 } });
      const b = await runtime({ jobs: { leaseMs: 400, takeOver: false } });
      const job = await endNotWritten(a, "raise-between", []);
      a.faults.fail("raise", raiseFails);
      // Another runtime's cancel from a view that counted none of the 4 answers, written raw.
      expect(await cancelFromNone(b, job.id, "cancelled: from fewer")).toBe("running");
      // Heard while A's end still cannot be written: A's tries stop there.
      expect(await within(job.done(), BOUND_MS, "A's view of the job to end")).toMatchObject({
        status: "failed",
        reason: "cancelled: from fewer",
        done: 4,
      });
      // The end as recorded carries the answers A counted (before: 0, A heard the cancel between
      // two tries of its own end, and the tries ended with nothing left to raise them).
      await waitUntil(async () => (await b.broker.getRecord(job.id))?.record.counts.done === 4, {
        timeoutMs: BOUND_MS,
        message: "the record's counts are the answers A counted",
      });
      expect(a.faults.injected("raise")).toBe(raiseFails);
    },
  );

  it("a cancel unheard by the record watch that lands as the end is written: the job ends after the raise's first try, the tries after it raise the counts", async () => {
    const a = await runtime();
    const b = await runtime({ jobs: { takeOver: false } });
    worker(a, "raise-unheard", []);
    // As A writes its end: its record watch deaf to the job from then on, and another runtime's
    // cancel from a view that counted none of the 4 answers, written raw. A's write finds it.
    let cancelled = false;
    a.faults.before("finalize", async (jobId) => {
      if (cancelled) return;
      cancelled = true;
      a.faults.unheard(jobId);
      await cancelFromNone(b, jobId, "cancelled: unheard");
    });
    // The store refuses the raise as in an outage, until healed.
    a.faults.fail("raise", Number.POSITIVE_INFINITY);
    const job = await a.rt.jobs.submit({ queue: "raise-unheard", tasks: indexes(4) });
    // Ends while the raise still fails: the tries after the first are the runtime's loops'.
    expect(await within(job.done(), QUICK_MS, "the job to end while its raise fails")).toMatchObject({
      status: "failed",
      reason: "cancelled: unheard",
    });
    expect(a.faults.injected("raise")).toBeGreaterThan(0);
    expect((await b.broker.getRecord(job.id))?.record.counts.done).toBe(0);
    a.faults.heal("raise");
    await waitUntil(async () => (await b.broker.getRecord(job.id))?.record.counts.done === 4, {
      timeoutMs: BOUND_MS,
      message: "the record's counts raised to the 4 answers A counted, once the store is back",
    });
  });

  it("a lease taken back as the job ended elsewhere is given back, not kept by the heartbeat", async () => {
    // Long enough for the take held at the door to land before its own `until`: the next
    // heartbeat then carries it on (one landing later runs out by itself).
    const leaseMs = 3000;
    const a = await runtime({ jobs: { leaseMs } });
    const b = await runtime({ jobs: { leaseMs, takeOver: false } });
    const job = await endNotWritten(a, "lease-late", []);
    // A's lease store unreachable: its lease runs out while it tries its end again, and it
    // takes the lease back; that take is held at the door.
    const door = gate();
    let taking = 0;
    a.faults.before("lease", async () => {
      taking++;
      await door.opened;
    });
    a.faults.fail("lease", Number.POSITIVE_INFINITY, job.id);
    await waitUntil(() => taking > 0, { timeoutMs: BOUND_MS, message: "A to take its job's lease back" });
    // Meanwhile the job ends elsewhere; A hears it, and its actor ends (releasing the lease).
    const cancelled = await (await b.rt.jobs.get(job.id))!.cancel("meanwhile");
    expect(cancelled).toMatchObject({ status: "failed", reason: "cancelled: meanwhile" });
    expect(await within(job.done(), BOUND_MS, "A's view of the job to end")).toMatchObject({
      status: "failed",
      reason: "cancelled: meanwhile",
    });
    // The store answers again, and A's take of the lease lands after its actor ended.
    const answered = a.faults.answered("lease");
    a.faults.heal("lease");
    door.open();
    await waitUntil(() => a.faults.answered("lease") > answered, {
      timeoutMs: BOUND_MS,
      message: "A's take of the lease to land",
    });
    // Kept, A's heartbeat renewed it for as long as A ran: the job, over, stayed among the
    // leases that index the jobs not over. Given back, a takeover pass removes it.
    await waitUntil(async () => (await b.broker.leases.get(job.id)) === undefined, {
      timeoutMs: BOUND_MS,
      message: "no lease left for the job that ended",
    });
  });

  it("a supervisor that takes no job over takes its own job's lease back to write the end", async () => {
    const leaseMs = 400;
    const a = await runtime({ jobs: { leaseMs, takeOver: false } });
    const ledger: number[] = [];
    const job = await endNotWritten(a, "own-lease", ledger);
    // Its lease runs out while it tries the end again (the lease store unreachable too).
    a.faults.fail("lease", Number.POSITIVE_INFINITY, job.id);
    await waitUntil(() => !a.broker.leases.holds(job.id), {
      timeoutMs: BOUND_MS,
      message: "A's lease to run out",
    });
    a.faults.heal("lease");
    a.faults.heal("finalize");
    // Nobody else supervises: before, A waited as a mere watcher for an end nobody wrote.
    const end = await within(job.done(), BOUND_MS, "A's job to end");
    expect(end).toMatchObject({ status: "succeeded", done: 4 });
    expect(await finalRecord(a, job.id)).toMatchObject({ status: "succeeded", counts: { done: 4 } });
    expect(tally(ledger).size).toBe(4);
  });

  it("lease renewals that fail: the runtime stops supervising by the lease's end, another takes over", async () => {
    const leaseMs = 600;
    const a = await runtime({ jobs: { leaseMs } });
    const b = await runtime({ jobs: { leaseMs } });
    const total = 8;
    const job = await a.rt.jobs.submit({ queue: "lease-fails", tasks: indexes(total) });
    expect(a.broker.leases.holds(job.id)).toBe(true);
    a.faults.fail("lease", Number.POSITIVE_INFINITY, job.id);
    const armedAt = Date.now();

    // Its last renewal was written before the fault: by then plus the lease it must let go.
    await waitUntil(() => !a.broker.leases.holds(job.id), {
      timeoutMs: leaseMs * 5,
      message: "runtime A to stop holding a lease it cannot renew",
    });
    expect(Date.now() - armedAt).toBeLessThan(leaseMs * 5);
    await waitUntil(
      async () =>
        (await b.broker.leases.list()).some(
          (l) => l.jobId === job.id && l.lease.holder === b.broker.leases.holder,
        ),
      { timeoutMs: BOUND_MS, message: "runtime B to take the job over" },
    );

    const ledger: number[] = [];
    worker(b, "lease-fails", ledger);
    const record = await finalRecord(b, job.id);
    expect(record).toMatchObject({ status: "succeeded", counts: { done: total, failed: 0, dead: 0 } });
    const end = await within(job.done(), BOUND_MS, "A's view of the job to end");
    expect(end).toMatchObject({ status: "succeeded", done: total });
    expect(a.faults.injected("lease")).toBeGreaterThan(0);
    expect(tally(ledger).size).toBe(total);
    expect(tally(okIndexes(await use.bench.rawResults(job.queue, job.id))).size).toBe(total);
  });

  it("an ack lost after its result was stored: the task is redelivered, counted once", async () => {
    const r = await runtime();
    const total = 6;
    const last = total - 1;
    const ledger: number[] = [];
    r.faults.fail("ack", 1);
    // The last task waits for a redelivery, so the job cannot end before one happened.
    worker(r, "ack-lost", ledger, async (i, ctx) => {
      if (i === last) {
        // Heartbeats keep this task's own lease while it waits (it must not be the one redelivered).
        await waitUntil(
          () => {
            ctx.heartbeat();
            return [...tally(ledger).values()].some((n) => n > 1);
          },
          {
            timeoutMs: BOUND_MS,
            intervalMs: 50,
            message: "the task whose ack was lost to be delivered again",
          },
        ).catch(() => undefined);
      }
      return i;
    });
    const job = await r.rt.jobs.submit({ queue: "ack-lost", tasks: indexes(total), ackWaitMs: 300 });
    const end = await within(job.done(), BOUND_MS * 2, "job with a lost ack to end");

    expect(r.faults.injected("ack")).toBe(1);
    const twice = [...tally(ledger)].filter(([, n]) => n > 1).map(([i]) => i);
    expect(twice).toHaveLength(1);
    const stored = await expectCountedOnce(r, end, total);
    // The server holds the redelivered task's answer twice; the job counted it once.
    expect(stored.get(twice[0]!)).toBe(2);
  });

  it("an ack lost on a task's last delivery after its result was stored: no dead letter to redrive, nothing runs twice", async () => {
    const r = await runtime();
    const total = 3;
    const ledger: number[] = [];
    r.faults.fail("ack", 1);
    let jobId = "";
    // The job stays live until the task whose ack was lost is dead-lettered: its `dead` answer
    // comes after its stored success, and the job must count the success.
    worker(r, "ack-lost-last", ledger, async (i, ctx) => {
      if (i === total - 1)
        await waitUntil(
          async () => {
            // Its one delivery kept while it waits (it must not be dead-lettered too).
            ctx.heartbeat();
            return (await r.broker.listDeadLetters("ack-lost-last", jobId)).length > 0;
          },
          {
            timeoutMs: BOUND_MS,
            intervalMs: 50,
            message: "the task whose ack was lost to be dead-lettered",
          },
        );
      return i;
    });
    const job = await r.rt.jobs.submit({
      queue: "ack-lost-last",
      tasks: indexes(total),
      ackWaitMs: 300,
      maxDeliver: 1,
    });
    jobId = job.id;
    const end = await within(job.done(), BOUND_MS * 2, "job with an ack lost on its last delivery to end");
    expect(r.faults.injected("ack")).toBe(1);
    // The handler's ledger and the server's own: every task ran once, and the one whose ack
    // was lost has its success stored, then a dead answer and a dead letter.
    expect(tally(ledger)).toEqual(new Map(indexes(total).map((i) => [i, 1])));
    await expectCountedOnce(r, end, total);
    const letters = await r.broker.listDeadLetters("ack-lost-last", job.id);
    expect(letters).toHaveLength(1);

    // Its task succeeded: nothing to redrive, and nothing listed as dead.
    expect(await r.rt.jobs.deadLetters(job.id)).toEqual([]);
    await expect(r.rt.jobs.redrive(job.id)).rejects.toMatchObject({ name: "InvalidArgument" });
    await expect(r.rt.jobs.redrive(job.id, [letters[0]!.index])).rejects.toMatchObject({
      name: "InvalidArgument",
    });
    // The redrive took the stale letter away.
    expect(await r.broker.listDeadLetters("ack-lost-last", job.id)).toEqual([]);
    expect(tally(ledger)).toEqual(new Map(indexes(total).map((i) => [i, 1])));
    expect((await r.broker.getRecord(job.id))?.record).toMatchObject({
      status: "succeeded",
      counts: { done: total, failed: 0, dead: 0 },
    });
  });

  it("a consumer create that fails mid-submit: rolled back, nothing visible; a resubmit runs once", async () => {
    const r = await runtime();
    const total = 5;
    const ledger: number[] = [];
    worker(r, "commit-fails", ledger);
    r.faults.fail("createConsumer", 1);
    // A consumer of its own: a lane job has no consumer to make.
    const request = {
      queue: "commit-fails",
      tasks: indexes(total),
      idempotencyKey: "commit-fails-1",
      lane: false,
    };
    await expect(r.rt.jobs.submit(request)).rejects.toThrow(/injected fault: createConsumer/);

    const {
      jobs: [rolledBack],
    } = await r.rt.jobs.list({ queue: "commit-fails" });
    expect(rolledBack).toMatchObject({ status: "failed", phase: "rolledBack" });
    expect(await use.bench.rawTasks("commit-fails", rolledBack!.id)).toBe(0);

    const job = await r.rt.jobs.submit(request);
    expect(job.id).toBe(rolledBack!.id);
    await expectCountedOnce(r, await within(job.done(), BOUND_MS, "the resubmitted job to end"), total);
    expect([...tally(ledger).values()]).toEqual(indexes(total).map(() => 1));
  });

  it("a commit write that fails for a lane job of several tasks: rolled back, none of its tasks runs or stays; a resubmit runs each once", async () => {
    const r = await runtime();
    const total = 5;
    const ledger: number[] = [];
    // Pulling the lane before the submit (a first lane job run), and the commit's write held
    // until the worker holds every task of the job: they reach the worker before the write fails.
    worker(r, "lane-commit-fails", ledger);
    await (await r.rt.jobs.submit({ queue: "lane-commit-fails", tasks: [0] })).done();
    ledger.length = 0;
    let held = false;
    r.faults.before("commit", async (jobId) => {
      // The first commit only (the resubmit's is not held).
      if (held) return;
      held = true;
      await waitUntil(() => r.faults.laneTaken(jobId) >= total, {
        timeoutMs: QUICK_MS,
        message: () => `the worker to hold the job's ${total} tasks (${r.faults.laneTaken(jobId)} taken)`,
      });
    });
    r.faults.fail("commit", 1);
    const request = { queue: "lane-commit-fails", tasks: indexes(total), idempotencyKey: "lane-commit-1" };
    await expect(r.rt.jobs.submit(request)).rejects.toThrow(/injected fault: commit/);
    const rolledBack = (await r.rt.jobs.list({ queue: "lane-commit-fails" })).jobs.find(
      (j) => j.phase === "rolledBack",
    );
    expect(rolledBack).toMatchObject({ status: "failed", phase: "rolledBack", lane: true });
    expect(await use.bench.rawTasks("lane-commit-fails", rolledBack!.id)).toBe(0);
    expect(ledger).toEqual([]);

    const job = await r.rt.jobs.submit(request);
    expect(job.id).toBe(rolledBack!.id);
    await expectCountedOnce(r, await within(job.done(), BOUND_MS, "the resubmitted job to end"), total);
    expect([...tally(ledger).values()]).toEqual(indexes(total).map(() => 1));
  });

  it("a lane job's commit stored though its answer was lost: the submit stands, each task runs once", async () => {
    const r = await runtime();
    const total = 5;
    const ledger: number[] = [];
    worker(r, "lane-commit-lost", ledger);
    r.faults.fail("commit", 1, undefined, "lost");
    const job = await r.rt.jobs.submit({ queue: "lane-commit-lost", tasks: indexes(total) });
    expect(r.faults.injected("commit")).toBe(1);
    await expectCountedOnce(r, await within(job.done(), BOUND_MS, "the job to end"), total);
    expect([...tally(ledger).values()]).toEqual(indexes(total).map(() => 1));
  });

  it("a task publish that outlives the commit deadline: the submit refuses to commit", async () => {
    const clock = new ManualClock(Date.now());
    const r = await runtime({ clock });
    // The publish takes (by the runtime's clock) longer than any commit deadline.
    r.faults.before("publishTasks", () => clock.advance(10 * 60_000));
    await expect(r.rt.jobs.submit({ queue: "too-late", tasks: indexes(3) })).rejects.toThrow(
      /commit deadline/,
    );
    const {
      jobs: [record],
    } = await r.rt.jobs.list({ queue: "too-late" });
    expect(record).toMatchObject({ status: "failed", phase: "rolledBack" });
    expect(await r.broker.tasksCommitted(record!)).toBe(false);
    expect(await use.bench.rawTasks("too-late", record!.id)).toBe(0);
  });

  it("an end written though its answer was lost, its lease run out meanwhile: its tasks are still removed", async () => {
    const r = await runtime({ jobs: { leaseMs: 400 } });
    // Armed before the submit (the job ends 300 ms after it): the end's write waits for the
    // lease to run out (the lease store unreachable), then lands and its answer is lost. The
    // next try finds the end recorded, with no lease to write it.
    r.faults.before("finalize", async (jobId) => {
      r.faults.fail("lease", Number.POSITIVE_INFINITY, jobId);
      await waitUntil(() => !r.broker.leases.holds(jobId), {
        timeoutMs: BOUND_MS,
        message: "the lease to run out",
      });
    });
    r.faults.fail("finalize", 1, undefined, "lost");
    const job = await stallingJob(r, "end-answer-lost");
    const end = await within(job.done(), BOUND_MS, "the stalled job to fail");
    expect(end).toMatchObject({ status: "failed", done: 0 });
    expect(r.faults.injected("finalize")).toBe(1);
    expect(await finalRecord(r, job.id)).toMatchObject({ status: "failed" });
    // Before: the four tasks stayed on the server (the clean-up that follows an end skipped).
    await waitUntil(async () => (await use.bench.rawTasks("end-answer-lost", job.id)) === 0, {
      timeoutMs: QUICK_MS,
      message: "the job's tasks removed",
    });
  });

  it("a job that ends with tasks left (cancelled) leaves none of them on the server", async () => {
    const r = await runtime();
    const job: JobHandle = await r.rt.jobs.submit({ queue: "nobody-pulls", tasks: indexes(4) });
    expect(await use.bench.rawTasks("nobody-pulls", job.id)).toBe(4);
    const end = await within(job.cancel("test"), BOUND_MS, "cancel");
    expect(end.status).toBe("failed");
    expect(await use.bench.rawTasks("nobody-pulls", job.id)).toBe(0);
  });

  it("a job that ends by itself with tasks left (stalled too long) leaves none of them on the server", async () => {
    const r = await runtime();
    const job = await stallingJob(r, "nobody-pulls-either");
    const end = await within(job.done(), BOUND_MS, "the stalled job to fail");
    expect(end).toMatchObject({ status: "failed", done: 0 });
    expect(await use.bench.rawTasks("nobody-pulls-either", job.id)).toBe(0);
  });
});
