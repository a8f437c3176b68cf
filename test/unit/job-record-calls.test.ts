/**
 * What a small job costs in record reads and writes, counted at the broker
 * port (the oracle: the calls the broker received, not the job's view of
 * itself). A job of one task is committed by its submit, which writes it
 * `running` with no answer counted: the job's own start must not read the
 * record again only to find nothing to write, nor its end read what it wrote.
 */
import { describe, expect, it } from "vitest";
import { createTestRuntime, partsOf } from "../../src/api/runtime.ts";
import { ManualClock } from "../../src/kernel/clock.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";

/** Counts the record calls the runtime's broker receives, by name, from now on. */
const countRecordCalls = (rt: Awaited<ReturnType<typeof createTestRuntime>>): string[] => {
  const { broker } = partsOf(rt);
  const calls: string[] = [];
  const counted = broker as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const name of ["createRecord", "getRecord", "updateRecord"]) {
    const call = counted[name]!.bind(broker);
    counted[name] = (...args: unknown[]) => {
      calls.push(name);
      return call(...args);
    };
  }
  return calls;
};

describe("record calls of a one-task job on the memory broker", () => {
  const run = async (lane: boolean): Promise<string[]> => {
    const rt = await createTestRuntime({ jobs: { lane } });
    const calls = countRecordCalls(rt);
    const worker = rt.workers.start<number, number>({ queue: "q", handler: (t) => t.payload * 2 });
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [21] });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
    await worker.stop();
    await rt.stop();
    return calls;
  };

  it("with a consumer of its own: the submit's create and commit, and the end's write on the commit's revision (no read)", async () => {
    expect(await run(false)).toEqual(["createRecord", "updateRecord", "updateRecord"]);
  });

  it("on the lane (the default): the submit's create, and the end's write that carries the commit (no read)", async () => {
    expect(await run(true)).toEqual(["createRecord", "updateRecord"]);
  });
});

describe("record calls of a live job that nothing answers", () => {
  it("are none while nothing changes: no progress write, no read, however long it waits", async () => {
    const clock = new ManualClock(Date.now());
    const rt = await createTestRuntime({ clock, jobs: { leaseMs: 30_000 } });
    const calls = countRecordCalls(rt);
    // No worker: the job runs, and nothing is answered for 30 s (its stall is at 60 s).
    const job = await rt.jobs.submit({ queue: "idle", tasks: [1, 2] });
    const settle = () => new Promise((resolve) => setTimeout(resolve, 5));
    for (let n = 0; n < 5; n++) await settle();
    const afterSubmit = calls.length;
    for (let s = 0; s < 30; s++) {
      clock.advance(1000);
      await settle();
    }
    expect(job.snapshot().status).toBe("running");
    expect(calls.slice(afterSubmit)).toEqual([]);
    await rt.stop();
  });
});

describe("the clock of a live job that nothing answers", () => {
  it("wakes when its stall is due, not every second, and the stall is seen on time", async () => {
    const clock = new ManualClock(Date.now());
    const ticks: number[] = [];
    const rt = await createTestRuntime({
      clock,
      jobs: { leaseMs: 30_000 },
      inspect: {
        inspect: (event) => {
          if (event.type === "@xstate.event" && event.event.type === "clock.tick") ticks.push(clock.now());
        },
      },
    });
    const job = await rt.jobs.submit({ queue: "idle", tasks: [1, 2], stallAfterMs: 20_000 });
    const settle = () => new Promise((resolve) => setTimeout(resolve, 5));
    for (let n = 0; n < 5; n++) await settle();
    const started = clock.now();
    let stalledAt: number | undefined;
    for (let s = 0; s < 25; s++) {
      clock.advance(1000);
      await settle();
      if (stalledAt === undefined && job.snapshot().status === "stalled") stalledAt = clock.now();
    }
    // The stall at 20 s after the commit, seen within the tick the machine asks for (1 s).
    expect(stalledAt).toBeDefined();
    expect(stalledAt! - started).toBeLessThanOrEqual(21_000);
    // 25 s of waiting: a wake at the stall (and the machine's few while it started), not 25.
    expect(ticks.length).toBeLessThanOrEqual(4);
    await rt.stop();
  });
});

describe("the record events of a job on the memory broker", () => {
  it("are none of its own writes seen back; another runtime's cancel still reaches it", async () => {
    const server = createMemoryServer();
    const events: string[] = [];
    const rt = await createTestRuntime({
      name: "submitter",
      broker: createMemoryBroker({ server }),
      inspect: {
        inspect: (event) => {
          if (event.type === "@xstate.event" && event.event.type === "record.changed")
            events.push(String((event.event as { status?: string }).status));
        },
      },
    });
    const worker = rt.workers.start<number, number>({ queue: "q", handler: (t) => t.payload * 2 });
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [21] });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
    await worker.stop();
    // Its commit and its end, both written by its own actor: no event (they were two).
    expect(events).toEqual([]);

    // Another writer's record does reach the actor: a cancel from a second runtime.
    const other = await createTestRuntime({ name: "other", broker: createMemoryBroker({ server }) });
    const idle = await rt.jobs.submit({ queue: "nobody", tasks: [1, 2] });
    const elsewhere = await other.jobs.get(idle.id);
    await elsewhere?.cancel("from elsewhere");
    expect(await idle.done()).toMatchObject({ status: "failed", reason: "cancelled: from elsewhere" });
    expect(events).toEqual(["failed"]);
    await other.stop();
    await rt.stop();
  });
});
