import { expect, it } from "vitest";
import type { Worker } from "../../src/api/workers.ts";
import { describeOnBothBenches, type FaultyRuntime, tally } from "../harness/fault-runtimes.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { gate, waitUntil } from "../harness/wait.ts";

/**
 * A 1-task lane job whose task publish outlives its submit's rollback (it
 * lands after the submitter found nothing stored), then its key submitted
 * again: nothing of the rolled-back submit may stand for the next one, on
 * either broker. Not its task (run as the new submit's, or read as its
 * commit), nor a result of it (counted as the new submit's answer, or read
 * as its commit). The oracles: the handler's own ledger, the publishes the
 * faulty broker kept and stored, and the tasks and results the server
 * holds, read raw.
 */

/** Longest a step may take here; far below the 60 s a test may take. */
const BOUND_MS = 15_000;

describeOnBothBenches("a rolled-back lane submit's late task on the %s broker", (use) => {
  const runtime = () => use.runtime();

  /**
   * A worker that writes every task it runs into `ledger`, then waits for `until()`; it answers
   * the run's number in the ledger (which run an answer stored is).
   */
  const worker = (
    r: FaultyRuntime,
    queue: string,
    ledger: number[],
    until: () => Promise<void> | undefined = () => undefined,
  ): Worker => {
    const w = r.rt.workers.start<number, unknown>({
      queue,
      concurrency: 4,
      stopTimeoutMs: 2000,
      handler: async (task) => {
        const run = ledger.push(task.index);
        await until();
        return run;
      },
    });
    use.after(() => w.stop());
    return w;
  };

  /** The id of the job of `queue` whose submit was rolled back. */
  const rolledBackId = async (r: FaultyRuntime, queue: string) => {
    const { jobs } = await r.rt.jobs.list({ queue });
    const job = jobs.find((j) => j.phase === "rolledBack");
    expect(job).toMatchObject({ status: "failed", phase: "rolledBack", lane: true, total: 1 });
    return job!.id;
  };

  /**
   * A submit of `request` (one task) whose publish is kept past its rollback, then stored: the
   * job's id; its task is on the lane, its record says rolled back.
   */
  const landedAfterRollback = async (r: FaultyRuntime, request: { queue: string; tasks: number[] }) => {
    r.faults.strand();
    await expect(r.rt.jobs.submit(request)).rejects.toThrow(/injected fault: publishTasks/);
    const jobId = await rolledBackId(r, request.queue);
    // Stored now, after its rollback removed what was stored.
    await r.faults.land();
    expect(await use.bench.rawTasks(request.queue, jobId)).toBe(1);
    return jobId;
  };

  it("its task, stored after the rollback: a resubmit whose own publish is lost rolls back, and the old task never runs", async () => {
    const r = await runtime();
    const queue = "stale-task";
    const request = { queue, tasks: [0], idempotencyKey: "stale-task-1" };
    const jobId = await landedAfterRollback(r, request);

    // The key again; this submit's own publish never lands: nothing of it is stored.
    r.faults.strand();
    await expect(r.rt.jobs.submit(request)).rejects.toThrow(/injected fault: publishTasks/);
    // Its rollback removed the old task with whatever was stored before its mark.
    expect(await use.bench.rawTasks(queue, jobId)).toBe(0);

    const ledger: number[] = [];
    worker(r, queue, ledger);
    const job = await r.rt.jobs.submit(request);
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
    expect(ledger).toEqual([0]);
    expect((await use.bench.rawResults(queue, jobId)).map((e) => e.i)).toEqual([0]);
  });

  it("its task, stored after the rollback, met by a worker while the resubmit publishes: never run", async () => {
    const r = await runtime();
    const queue = "stale-run";
    const request = { queue, tasks: [0], idempotencyKey: "stale-run-1" };
    const jobId = await landedAfterRollback(r, request);

    // The key again: before its task is published, a worker starts and meets the old one.
    const ledger: number[] = [];
    let beforeItsPublish: number[] | undefined;
    r.faults.before("publishTasks", async () => {
      if (beforeItsPublish) return;
      worker(r, queue, ledger);
      await waitUntil(async () => (await use.bench.rawTasks(queue, jobId)) === 0, {
        timeoutMs: BOUND_MS,
        message: "the worker to take the old task off the lane",
      });
      beforeItsPublish = [...ledger];
    });
    const job = await r.rt.jobs.submit(request);
    expect(beforeItsPublish).toEqual([]);
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
    expect(ledger).toEqual([0]);
    expect((await use.bench.rawResults(queue, jobId)).map((e) => e.i)).toEqual([0]);
  });

  it("its answer, stored once the next submit's job runs, before that job's own: the job's feed passes it over", async () => {
    const { lines, logger } = capturedLog("warn");
    const r = await use.runtime({ logger });
    const queue = "stale-feed";
    const request = { queue, tasks: [0], idempotencyKey: "stale-feed-1" };
    r.faults.strand();
    await expect(r.rt.jobs.submit(request)).rejects.toThrow(/injected fault: publishTasks/);
    const jobId = await rolledBackId(r, queue);
    const old = (await r.rt.jobs.record(jobId))?.submitId;

    // The key again: its own task runs, its answer held back.
    const ledger: number[] = [];
    const handler = gate();
    worker(r, queue, ledger, () => handler.opened);
    const job = await r.rt.jobs.submit(request);
    await waitUntil(() => ledger.length === 1 && job.snapshot().status === "running", {
      timeoutMs: BOUND_MS,
      message: () => `the new submit's task to run (ledger ${JSON.stringify(ledger)})`,
    });
    // The rolled-back submit's answer of the task lands now, as a worker that ran its late task
    // under it stores it; then a message the feed skips and logs: read in order, the old answer
    // was read before it.
    await use.bench.rawPublishResults(queue, jobId, JSON.stringify([{ i: 0, ok: true, r: "old", s: old }]));
    await use.bench.rawPublishResults(queue, jobId, JSON.stringify([{ not: "a result" }]));
    await waitUntil(() => lines.some((l) => l.msg === "results message skipped"), {
      timeoutMs: BOUND_MS,
      message: "the job's feed to read past the old answer",
    });
    expect(job.snapshot()).toMatchObject({ status: "running", done: 0 });

    handler.open();
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
    expect(ledger).toEqual([0]);
    expect((await use.bench.rawResults(queue, jobId)).map((e) => [e.i, e.ok && e.r, e.s])).toEqual([
      [0, "old", old],
      [undefined, undefined, undefined],
      [0, 1, (await r.rt.jobs.record(jobId))?.submitId],
    ]);
  });

  it("its result, stored after the rollback: a resubmit whose own publish is lost rolls back, and the result is not its answer", async () => {
    const submitter = await runtime();
    // The worker's record watch misses the job's writes: it runs the late task as the record
    // read when it came said (the first submit, before its rollback's mark), and never hears
    // the mark.
    const runner = await runtime();
    const queue = "stale-result";
    const ledger: number[] = [];
    const handler = gate();
    let held = false;
    worker(runner, queue, ledger, () => (held ? handler.opened : undefined));
    // A first lane job of the queue: the worker pulls the lane from then on.
    await (await submitter.rt.jobs.submit({ queue, tasks: [7] })).done();
    ledger.length = 0;
    held = true;

    const request = { queue, tasks: [0], idempotencyKey: "stale-result-1" };
    let landed = false;
    submitter.faults.before("publishTasks", (jobId) => runner.faults.unheard(jobId));
    // The late publish lands once the submitter found nothing stored, before its mark: the
    // worker reads the record still naming that submit, and runs the task.
    submitter.faults.before("rollBack", async () => {
      if (landed) return;
      landed = true;
      await submitter.faults.land();
      await waitUntil(() => ledger.length === 1, {
        timeoutMs: BOUND_MS,
        message: () => `the worker to run the late task (ledger ${JSON.stringify(ledger)})`,
      });
    });
    submitter.faults.strand();
    await expect(submitter.rt.jobs.submit(request)).rejects.toThrow(/injected fault: publishTasks/);
    const jobId = await rolledBackId(submitter, queue);

    // The key again: the old task's answer is stored while this submit publishes, which never lands.
    submitter.faults.before("publishTasks", async () => {
      handler.open();
      // Answered and acked: its answer is all that is left of it.
      await waitUntil(
        async () =>
          (await use.bench.rawResults(queue, jobId)).length === 1 &&
          (await use.bench.rawTasks(queue, jobId)) === 0,
        { timeoutMs: BOUND_MS, message: "the old task to be answered and acked" },
      );
    });
    submitter.faults.strand();
    await expect(submitter.rt.jobs.submit(request)).rejects.toThrow(/injected fault: publishTasks/);
    expect(ledger).toEqual([0]);
    expect(await use.bench.rawTasks(queue, jobId)).toBe(0);

    // A third submit runs its own task, and only its own answer counts.
    submitter.faults.heal("publishTasks");
    const job = await submitter.rt.jobs.submit(request);
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
    expect([...tally(ledger).values()]).toEqual([2]);
    // Stored: the old run's answer (run 1), then this submit's (run 2).
    expect((await use.bench.rawResults(queue, jobId)).map((e) => [e.i, e.ok && e.r])).toEqual([
      [0, 1],
      [0, 2],
    ]);
    const answers = async (handle: typeof job) => {
      const read: unknown[] = [];
      for await (const answer of handle.results()) read.push([answer.index, answer.ok && answer.result]);
      return read;
    };
    expect(await answers(job)).toEqual([[0, 2]]);
    // Read from the stream's first message by a runtime that kept none of them.
    const reader = await runtime();
    const watched = await reader.rt.jobs.get(jobId);
    expect(watched).toBeDefined();
    expect(await answers(watched!)).toEqual([[0, 2]]);
  });
});
