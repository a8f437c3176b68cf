/**
 * A task with two dead letters (its worker stored one, and the
 * MAX_DELIVERIES advisory path another: a lost term, or a results publish
 * that gave up): a redrive of it removes both. The oracle is the memory
 * server's dead-letter log, read directly, and the handler's ledger.
 */
import { afterEach, describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { partsOf, type Runtime } from "../../src/api/runtime.ts";
import type { Clock } from "../../src/kernel/clock.ts";
import {
  createMemoryBroker,
  createMemoryServer,
  createTestRuntime,
  type MemoryServer,
} from "../../src/testing.ts";
import { waitUntil } from "../harness/wait.ts";

/**
 * A worker on queue "q" whose handler fails ("model not loaded") until
 * `mend()`; `ran` is its ledger, "failed" or "ok" per run.
 */
const brokenWorker = (rt: Runtime, result: (payload: number) => number = (payload) => payload) => {
  let broken = true;
  const ran: string[] = [];
  const worker = rt.workers.start<number, number>({
    queue: "q",
    handler: (task) => {
      ran.push(broken ? "failed" : "ok");
      if (broken) throw new Error("model not loaded");
      return result(task.payload);
    },
  });
  return {
    worker,
    ran,
    mend: () => {
      broken = false;
    },
  };
};

/** A broker of `server` whose first removal of dead letters fails (the server not answering). */
const removalFailsOnce = (server: MemoryServer) => {
  const broker = createMemoryBroker({ server });
  const remove = broker.removeDeadLetters.bind(broker);
  let refuse = true;
  broker.removeDeadLetters = async (seqs) => {
    if (!refuse) return remove(seqs);
    refuse = false;
    throw new Error("dead letters: the server did not answer");
  };
  return broker;
};

describe("redrives and their dead letters", () => {
  let rt: Runtime | undefined;
  afterEach(async () => {
    await rt?.stop();
  });

  it("leaves none behind, and is not redriven again", async () => {
    const server = createMemoryServer();
    rt = await createTestRuntime({ broker: createMemoryBroker({ server }) });
    const { worker, ran, mend } = brokenWorker(rt);
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [7], maxDeliver: 1 });
    expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
    const [letter] = await rt.jobs.deadLetters(job.id);
    // The same task's second letter, as the advisory path stores it (another message id).
    const { seq: _seq, taskId: _taskId, ...stored } = letter!;
    await partsOf(rt).broker.storeDeadLetter({ ...stored, source: "advisory" }, `dead.${job.id}.advisory`);
    const logged = () => memoryServerState(server).deadLetters.read(`jetstate.dead.q.${job.id}`).length;
    expect(logged()).toBe(2);
    expect(await rt.jobs.deadLetters(job.id)).toHaveLength(1);
    mend();
    expect(await (await rt.jobs.redrive(job.id)).done()).toMatchObject({
      status: "succeeded",
      done: 1,
      dead: 0,
    });
    // Before the fix the second letter stayed: the job listed a dead task, and a redrive ran it again.
    expect(logged()).toBe(0);
    expect(await rt.jobs.deadLetters(job.id)).toEqual([]);
    await expect(rt.jobs.redrive(job.id)).rejects.toThrow(/no dead letter/);
    await worker.stop();
    expect(ran).toEqual(["failed", "ok"]);
  });

  it("the same dead task redriven twice at once (two operators, a retried call) runs once", async () => {
    const server = createMemoryServer();
    rt = await createTestRuntime({ broker: createMemoryBroker({ server }) });
    /** Every task the server stores (this test's one job is all there is). */
    const storedTasks = () => {
      const { tasks } = memoryServerState(server);
      return tasks.subjects().reduce((n, subject) => n + tasks.count(subject), 0);
    };
    let broken = true;
    const ran: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const worker = rt.workers.start<number, number>({
      queue: "q",
      concurrency: 4,
      handler: async (task) => {
        ran.push(broken ? "failed" : "ok");
        if (broken) throw new Error("model not loaded");
        await held;
        return task.payload;
      },
    });
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [7], maxDeliver: 1 });
    expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
    broken = false;
    const [first] = await Promise.all([rt.jobs.redrive(job.id), rt.jobs.redrive(job.id)]);
    // Both redrives are over: one copy of the task is stored, none other to deliver (the server's
    // store read raw). Before the fix there were two, the second delivered while the first was held.
    expect(storedTasks(), "copies of the task stored").toBe(1);
    release();
    expect(await first.done()).toMatchObject({ status: "succeeded", done: 1, dead: 0 });
    // Answered and the job over: nothing is left stored to run again.
    expect(storedTasks(), "tasks stored at the end").toBe(0);
    await worker.stop();
    // Before the fix each redrive published the task under ids of its own: it ran twice.
    expect(ran).toEqual(["failed", "ok"]);
  });

  it("the same redrive made twice at once lowers the record's dead count once", async () => {
    const server = createMemoryServer();
    // No supervisor after the redrive (a CLI's runtime): nothing writes the count back.
    rt = await createTestRuntime({ broker: createMemoryBroker({ server }), jobs: { takeOver: false } });
    const worker = rt.workers.start<number, number>({
      queue: "q",
      handler: () => {
        throw new Error("model not loaded");
      },
    });
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [1, 2], maxDeliver: 1 });
    expect(await job.done()).toMatchObject({ status: "failed", dead: 2 });
    await worker.stop();
    await Promise.all([rt.jobs.redrive(job.id, [0]), rt.jobs.redrive(job.id, [0])]);
    // The stored record, read without the runtime: one task sent back, one dead left.
    const stored = memoryServerState(server).records.get("test", job.id)?.value as string;
    expect(JSON.parse(stored)).toMatchObject({ status: "running", counts: { dead: 1 } });
  });

  it("a redrive whose letters were not removed, then the task's new letter: the next redrive runs it", async () => {
    // The server's clock runs ahead on demand: past the 2-minute duplicate window.
    let ahead = 0;
    const clock: Clock = {
      now: () => Date.now() + ahead,
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
    };
    const server = createMemoryServer({ clock });
    const broker = removalFailsOnce(server);
    rt = await createTestRuntime({ broker });
    const { worker, ran, mend } = brokenWorker(rt);
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [7], maxDeliver: 1 });
    expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
    // Published and reopened, but its letter stays: the task runs, and dies again.
    await expect(rt.jobs.redrive(job.id)).rejects.toThrow(/did not answer/);
    const logged = () => memoryServerState(server).deadLetters.read(`jetstate.dead.q.${job.id}`).length;
    await waitUntil(() => logged() === 2, { timeoutMs: 10_000, message: "the task's second letter" });
    await waitUntil(async () => (await rt!.jobs.get(job.id))?.snapshot().status === "failed", {
      timeoutMs: 10_000,
      message: "the job over again",
    });
    ahead = 130_000;
    mend();
    const again = await rt.jobs.redrive(job.id);
    // Before the fix it took the first redrive's id from the stale letter: it wrote nothing,
    // published nothing new, and removed both letters; the task never ran again.
    expect(await again.done()).toMatchObject({ status: "succeeded", done: 1, dead: 0 });
    await worker.stop();
    expect(ran).toEqual(["failed", "failed", "ok"]);
  });

  it("a redrive made again after its letters' removal failed, the job over since: the letters go", async () => {
    const server = createMemoryServer();
    const broker = removalFailsOnce(server);
    rt = await createTestRuntime({ broker });
    const { worker, ran, mend } = brokenWorker(rt);
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [7], maxDeliver: 1 });
    expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
    mend();
    // Published and reopened, but its letter stays: the task runs, and the job succeeds.
    await expect(rt.jobs.redrive(job.id)).rejects.toThrow(/did not answer/);
    await waitUntil(async () => (await rt!.jobs.get(job.id))?.snapshot().status === "succeeded", {
      timeoutMs: 10_000,
      message: "the job, its task redriven, succeeded",
    });
    const logged = () => memoryServerState(server).deadLetters.read(`jetstate.dead.q.${job.id}`).length;
    expect(logged()).toBe(1);
    // The same redrive again (an operator retrying the call that failed).
    await rt.jobs.redrive(job.id);
    // Before the fix it found its id in the record and did nothing: the letter stayed, and the
    // succeeded job listed its task dead for good.
    expect(logged()).toBe(0);
    expect(await rt.jobs.deadLetters(job.id)).toEqual([]);
    expect((await rt.jobs.get(job.id))?.snapshot()).toMatchObject({ status: "succeeded", done: 1, dead: 0 });
    await worker.stop();
    expect(ran).toEqual(["failed", "ok"]);
  });

  it("the same lane redrive twice at once, the one that reopened refused its publish: the task stays redrivable", async () => {
    const broker = createMemoryBroker();
    rt = await createTestRuntime({ broker, jobs: { lane: true } });
    const { worker, ran, mend } = brokenWorker(rt, (payload) => payload * 2);
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [21], backoff: [5] });
    expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
    mend();
    const publish = broker.publishTasks.bind(broker);
    let publishes = 0;
    broker.publishTasks = async (...args) => {
      if (++publishes === 1) throw new Error("publish refused");
      return publish(...args);
    };
    await Promise.allSettled([rt.jobs.redrive(job.id), rt.jobs.redrive(job.id)]);
    // Before the fix the other one published the task while this one put the record back:
    // the lane worker removed the task of a job over, and the letters went with it.
    const letters = await rt.jobs.deadLetters(job.id);
    expect(letters).toHaveLength(1);
    expect((await rt.jobs.get(job.id))?.snapshot()).toMatchObject({ status: "failed", dead: 1 });
    const end = await (await rt.jobs.redrive(job.id)).done();
    expect(end).toMatchObject({ status: "succeeded", done: 1, dead: 0 });
    await worker.stop();
    expect(ran.filter((r) => r === "ok")).toHaveLength(1);
  });
});
