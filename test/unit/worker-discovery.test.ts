/**
 * A worker finds the jobs already running on its queue when its runtime's
 * record watch is placed: from the consumers on the queue's tasks, reading
 * each one's record (api/queue-jobs.ts). Two runtimes share one
 * memory server: a submitter, and a worker whose broker is spied, so the
 * test decides what the worker's reads answer. The oracle is what the jobs
 * did (their ends, the worker's count of jobs it follows), never the pass.
 */
import { afterEach, describe, expect, it } from "vitest";
import { createMemoryBroker, createMemoryServer } from "../../src/adapters/memory/memory-broker.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { delay } from "../harness/wait.ts";

type Around = Parameters<typeof spiedBroker>[1];

describe("a worker's pass over the jobs already there", () => {
  const runtimes: Runtime[] = [];
  afterEach(async () => {
    await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
  });

  const setUp = async (lane: boolean) => {
    const server = createMemoryServer();
    const submitter = await createRuntime({
      broker: createMemoryBroker({ server }),
      logger: silentLogger(),
      roles: ["submitter", "supervisor"],
      jobs: { lane },
    });
    runtimes.push(submitter);
    const workerRuntime = async (around: Around) => {
      const { broker } = spiedBroker(createMemoryBroker({ server }), around);
      const rt = await createRuntime({ broker, logger: silentLogger(), roles: ["worker"] });
      runtimes.push(rt);
      return rt;
    };
    return { submitter, workerRuntime };
  };

  it("a record it cannot read keeps no other job from running", async () => {
    const { submitter, workerRuntime } = await setUp(false);
    // More jobs than one batch of reads (32): the unreadable one is in the first.
    const jobs = [];
    for (let k = 0; k < 40; k++) jobs.push(await submitter.jobs.submit({ queue: "q", tasks: [k] }));
    const unreadable = jobs[0]!.id;
    const rt = await workerRuntime((key, _n, args, call) =>
      key === "getRecord" && args[0] === unreadable
        ? Promise.reject(new Error("a record of a newer version"))
        : call(),
    );
    rt.workers.start<number, number>({ queue: "q", handler: (task) => task.payload });
    const ends = await Promise.all(jobs.slice(1).map((job) => job.done()));
    expect(ends.map((end) => end.status)).toEqual(jobs.slice(1).map(() => "succeeded"));
    expect((await submitter.jobs.get(unreadable))?.snapshot().status).toBe("running");
  });

  it("a record the watch hands over while the pass reads wins over the pass's older read", async () => {
    const { submitter, workerRuntime } = await setUp(true);
    // A lane job: following it costs no pull loop, so a stale read that followed it would stay.
    const job = await submitter.jobs.submit({ queue: "q", tasks: [1] });
    let cancelled = () => {};
    const gate = new Promise<void>((resolve) => {
      cancelled = resolve;
    });
    let read: () => void = () => {};
    const reading = new Promise<void>((resolve) => {
      read = resolve;
    });
    const rt = await workerRuntime((key, _n, args, call) => {
      // The lane is not pulled here: only the pass reads the job.
      if (key === "queueConsumers") return Promise.resolve({ jobIds: [job.id], lane: false });
      if (key !== "getRecord" || args[0] !== job.id) return call();
      // Read as it runs, answered once its cancel has reached the worker through the watch.
      return (call() as Promise<unknown>).then(async (found) => {
        read();
        await gate;
        return found;
      });
    });
    const worker = rt.workers.start({ queue: "q", handler: () => 1 });
    await reading;
    await job.cancel("meanwhile");
    // The cancel's record reaches the worker through its runtime's watch (in memory, at once).
    await delay(50);
    cancelled();
    await delay(50);
    expect(worker.stats().activeJobs).toBe(0);
  });

  it("a pass over more jobs than Node's listener limit adds no listener per read (no MaxListenersExceededWarning)", async () => {
    const { submitter, workerRuntime } = await setUp(false);
    const jobs = [];
    for (let k = 0; k < 40; k++) jobs.push(await submitter.jobs.submit({ queue: "q", tasks: [k] }));
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on("warning", onWarning);
    try {
      const rt = await workerRuntime((_key, _n, _args, call) => call());
      rt.workers.start<number, number>({ queue: "q", handler: (task) => task.payload });
      await Promise.all(jobs.map((job) => job.done()));
      await delay(20);
    } finally {
      process.off("warning", onWarning);
    }
    expect(warnings.filter((name) => name === "MaxListenersExceededWarning")).toEqual([]);
  });
});
