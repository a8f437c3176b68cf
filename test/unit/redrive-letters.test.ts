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

describe("a redriven task that had two dead letters", () => {
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
});
