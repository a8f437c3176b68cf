/**
 * A task with two dead letters (its worker stored one, and the
 * MAX_DELIVERIES advisory path another: a lost term, or a results publish
 * that gave up): a redrive of it removes both. The oracle is the memory
 * server's dead-letter log, read directly, and the handler's ledger.
 */
import { afterEach, describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { partsOf, type Runtime } from "../../src/api/runtime.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";

describe("redrives and their dead letters", () => {
  let rt: Runtime | undefined;
  afterEach(async () => {
    await rt?.stop();
  });

  it("leaves none behind, and is not redriven again", async () => {
    const server = createMemoryServer();
    rt = await createTestRuntime({ broker: createMemoryBroker({ server }) });
    let broken = true;
    const ran: string[] = [];
    const worker = rt.workers.start<number, number>({
      queue: "q",
      handler: (task) => {
        ran.push(broken ? "failed" : "ok");
        if (broken) throw new Error("model not loaded");
        return task.payload;
      },
    });
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [7], maxDeliver: 1 });
    expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
    const [letter] = await rt.jobs.deadLetters(job.id);
    // The same task's second letter, as the advisory path stores it (another message id).
    const { seq: _seq, taskId: _taskId, ...stored } = letter!;
    await partsOf(rt).broker.storeDeadLetter({ ...stored, source: "advisory" }, `dead.${job.id}.advisory`);
    const logged = () => memoryServerState(server).deadLetters.read(`jetstate.dead.q.${job.id}`).length;
    expect(logged()).toBe(2);
    expect(await rt.jobs.deadLetters(job.id)).toHaveLength(1);
    broken = false;
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
    rt = await createTestRuntime();
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
    // Both published the task before either ran it: held, the second copy would be delivered too.
    await new Promise((resolve) => setTimeout(resolve, 200));
    release();
    expect(await first.done()).toMatchObject({ status: "succeeded", done: 1, dead: 0 });
    await new Promise((resolve) => setTimeout(resolve, 200));
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
});
