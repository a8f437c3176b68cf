/**
 * A lane job's dead task redriven while a worker pulls the lane: the task
 * must run, not be removed as a task of a job that is over. The redrive
 * published the task before its record said the job runs again, and a
 * worker that took it first read the finished record and removed it; the
 * job then waited for an answer that could never come. The oracle is the
 * handler's own ledger of what it ran. A redrive whose task is not
 * published puts the record back as it was: the job is over, its task dead
 * and redrivable (it stayed running, with nothing to run and no
 * supervisor). The oracle there is the record as the broker stores it.
 */
import { afterEach, describe, expect, it } from "vitest";
import { createMemoryBroker } from "../../src/adapters/memory/memory-broker.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { within } from "../harness/wait.ts";

describe("redrive of a lane job", () => {
  let rt: Runtime | undefined;
  afterEach(async () => {
    await rt?.stop();
  });

  it("runs the redriven task on the lane, and the job succeeds", async () => {
    rt = await createRuntime({
      broker: createMemoryBroker({ prefix: "jetstate" }),
      logger: silentLogger(),
      jobs: { lane: true },
    });
    const ran: string[] = [];
    let broken = true;
    const worker = rt.workers.start<number, number>({
      queue: "q",
      handler: (task) => {
        ran.push(`${task.payload} ${broken ? "failed" : "ok"}`);
        if (broken) throw new Error("model not loaded");
        return task.payload * 2;
      },
    });
    // A lane job's task dies after the lane's 5 deliveries.
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [21], backoff: [5] });
    expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
    broken = false;
    const again = await rt.jobs.redrive(job.id);
    // Its end, or "never" if it has none within 3 s (a task removed, not run, leaves it waiting).
    const end = await within(again.done(), 3000);
    expect(ran).toEqual([...Array.from({ length: 5 }, () => "21 failed"), "21 ok"]);
    expect(end).toMatchObject({ status: "succeeded", done: 1, dead: 0 });
    await worker.stop();
  });

  it("a redrive whose task is not published leaves the job over, its task dead; the next redrive runs it", async () => {
    const broker = createMemoryBroker({ prefix: "jetstate" });
    rt = await createRuntime({ broker, logger: silentLogger(), jobs: { lane: true } });
    let broken = true;
    const worker = rt.workers.start<number, number>({
      queue: "q",
      handler: (task) => {
        if (broken) throw new Error("model not loaded");
        return task.payload * 2;
      },
    });
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [21], backoff: [5] });
    expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
    const before = (await broker.getRecord(job.id))?.record;
    const publish = broker.publishTasks.bind(broker);
    let refuse = true;
    broker.publishTasks = async (...args) => {
      if (!refuse) return publish(...args);
      refuse = false;
      throw new Error("publish refused");
    };
    await expect(rt.jobs.redrive(job.id)).rejects.toThrow("publish refused");
    const after = (await broker.getRecord(job.id))?.record;
    expect(after).toMatchObject({
      status: "failed",
      counts: { done: 0, failed: 0, dead: 1 },
      reason: before?.reason,
      finishedAt: before?.finishedAt,
    });
    broken = false;
    const again = await rt.jobs.redrive(job.id);
    expect(await again.done()).toMatchObject({ status: "succeeded", done: 1, dead: 0 });
    await worker.stop();
  });
});
