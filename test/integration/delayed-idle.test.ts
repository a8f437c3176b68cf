/**
 * A delayed job whose tasks are all held asks nothing of the server from
 * its workers until its first task is nearly due: each worker used to start
 * its pull loop at the commit, one pull request every 3 s for every such job
 * (10,000 jobs due tomorrow: 3,300 requests a second per worker). The
 * oracle is the server's side: a connection of the test's own subscribed to
 * the pull requests of the job's consumer, and the handler's ledger of when
 * each task ran.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const names = brokerNames("jetstate");

describe("a delayed job's workers before it is due", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({ servers: server.url, logger: silentLogger() });
    nc = await connect({ servers: server.url, name: "pull-requests" });
  });
  afterAll(async () => {
    await nc?.close();
    await rt?.stop();
    await server?.dispose();
  });

  /** Pull requests for the job's consumer, as the server receives them. */
  const pullsOf = (queue: string, jobId: string) => {
    const seen: number[] = [];
    const sub = nc.subscribe(`$JS.API.CONSUMER.MSG.NEXT.${names.tasksStream(queue)}.${jobId}`, {
      callback: () => {
        seen.push(Date.now());
      },
    });
    return { seen, stop: () => sub.unsubscribe() };
  };

  /** A worker of `queue` whose handler writes down each payload it runs, and when: the ledger. */
  const ledgerWorker = (queue: string) => {
    const ran: Array<{ n: number; at: number }> = [];
    const worker = rt.workers.start<number, number>({
      queue,
      handler: (task) => {
        ran.push({ n: task.payload, at: Date.now() });
        return task.payload;
      },
    });
    return { ran, worker };
  };

  it("no pull before its first task is nearly due; every task runs once, none early", async () => {
    const queue = "due-later";
    const { ran, worker } = ledgerWorker(queue);
    const runAt = Date.now() + 4500;
    const job = await rt.jobs.submit({ queue, tasks: [1, 2, 3], runAt });
    const pulls = pullsOf(queue, job.id);
    await nc.flush();
    await waitUntil(() => worker.stats().activeJobs === 1, { timeoutMs: 5000, message: "the job followed" });
    // A followed job all of whose tasks are held: the server hears no pull until its first task
    // is nearly due. The oracle is the time of every pull the server heard, checked at the end
    // (a pull loop started at the commit shows as a pull 4.5 s before the due time).
    expect(pulls.seen).toEqual([]);
    await expect(job.done()).resolves.toMatchObject({ status: "succeeded", done: 3 });
    pulls.stop();
    expect(ran.map((r) => r.n).sort()).toEqual([1, 2, 3]);
    expect(ran.filter((r) => r.at < runAt)).toEqual([]);
    // Its loop started near the due time, a second early at most (clocks that disagree).
    expect(pulls.seen.length).toBeGreaterThan(0);
    expect(Math.min(...pulls.seen)).toBeGreaterThanOrEqual(runAt - 1500);
    await worker.stop();
  });

  it("a delayed job with tasks due at its submit is pulled at once", async () => {
    const queue = "partly-due";
    const { ran, worker } = ledgerWorker(queue);
    const later = Date.now() + 5000;
    const job = await rt.jobs.submit({ queue, tasks: [1, 2], taskRunAt: [null, later] });
    // Well before the other is due, even counting a worker's second early.
    await waitUntil(() => ran.length === 1, { timeoutMs: 2000, message: "the task due now ran" });
    expect(ran[0]).toMatchObject({ n: 1 });
    expect(ran[0]!.at).toBeLessThan(later);
    await expect(job.done()).resolves.toMatchObject({ status: "succeeded", done: 2 });
    expect(ran.find((r) => r.n === 2)!.at).toBeGreaterThanOrEqual(later);
    await worker.stop();
  });

  it("a delayed job cancelled while its workers wait for its due time: no pull, nothing run, and the worker stops at once", async () => {
    const queue = "cancelled-later";
    const { ran, worker } = ledgerWorker(queue);
    const runAt = Date.now() + 3000;
    const job = await rt.jobs.submit({ queue, tasks: [1], runAt });
    const pulls = pullsOf(queue, job.id);
    await nc.flush();
    await waitUntil(() => worker.stats().activeJobs === 1, { timeoutMs: 5000, message: "the job followed" });
    await job.cancel("not needed");
    await waitUntil(() => worker.stats().activeJobs === 0, { timeoutMs: 5000, message: "the job let go" });
    const stopping = Date.now();
    await worker.stop();
    expect(Date.now() - stopping).toBeLessThan(1000);
    // Past its due time: nothing pulled, nothing run.
    await delay(Math.max(0, runAt - Date.now()) + 500);
    pulls.stop();
    expect(pulls.seen).toEqual([]);
    expect(ran).toEqual([]);
  });

  it("a redrive of a task of a delayed job still running wakes its waiting workers: the task runs at once", async () => {
    const queue = "redriven-early";
    // The first worker lets task 0 die (one delivery), task 1 is held for 20 s: the job runs on.
    let broken = true;
    const first = rt.workers.start<number, number>({
      queue,
      handler: (task) => {
        if (broken) throw new Error("model not loaded");
        return task.payload;
      },
    });
    const later = Date.now() + 20_000;
    const job = await rt.jobs.submit({ queue, tasks: [0, 1], taskRunAt: [null, later], maxDeliver: 1 });
    await waitUntil(async () => (await rt.jobs.deadLetters(job.id)).length === 1, {
      timeoutMs: 5000,
      message: "task 0 dead",
    });
    await first.stop();
    // A worker that follows the job now finds nothing to pull: it waits for task 1's time.
    broken = false;
    const { ran, worker } = ledgerWorker(queue);
    await waitUntil(() => worker.stats().activeJobs === 1, { timeoutMs: 5000, message: "the job followed" });
    await delay(300);
    await rt.jobs.redrive(job.id);
    await waitUntil(() => ran.length === 1, { timeoutMs: 5000, message: "the redriven task ran" });
    expect(ran[0]!.n).toBe(0);
    expect(ran[0]!.at).toBeLessThan(later - 10_000);
    await job.cancel("the rest is not needed");
    await worker.stop();
  });
});
