/**
 * A runtime watching a job it does not supervise (a `get()`) decides no end
 * on its own clock: its stalled timeout is the supervisor's to apply. Here
 * the watcher's clock runs ahead of the supervisor's (another host's, or a
 * supervisor that took the job over later) past the job's stalled timeout.
 * The oracles: the record as the memory server holds it, and what the
 * watcher's subscribers were shown.
 */
import { expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime, ManualClock } from "../../src/testing.ts";
import { waitUntil } from "../harness/wait.ts";

/** A supervisor on the real clock and a watcher (no takeover) on a clock the test moves. */
const setUp = async () => {
  const server = createMemoryServer();
  const supervisor = await createTestRuntime({ name: "supervisor", broker: createMemoryBroker({ server }) });
  const clock = new ManualClock(Date.now());
  const watcher = await createTestRuntime({
    name: "watcher",
    clock,
    jobs: { takeOver: false },
    broker: createMemoryBroker({ server }),
  });
  return { server, supervisor, clock, watcher };
};

it("a watcher whose clock passed the stalled timeout shows the job stalled, not failed, until the supervisor ends it", async () => {
  const { server, supervisor, clock, watcher } = await setUp();
  const stored = (id: string) => {
    const entry = memoryServerState(server)
      .records.live()
      .find((e) => e.key === id);
    return entry ? (JSON.parse(entry.value as string) as { status: string }) : undefined;
  };
  try {
    const job = await supervisor.jobs.submit({
      queue: "nowork",
      tasks: [1, 2],
      stallAfterMs: 60_000,
      stalledTimeoutMs: 120_000,
    });
    const opened = await watcher.jobs.get(job.id);
    const shown: string[] = [];
    opened!.subscribe((s) => shown.push(s.status));
    // Past the watcher's stall and its stalled timeout, a tick at a time.
    for (let n = 0; n < 20; n++) {
      clock.advance(10_000);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await waitUntil(() => opened!.snapshot().status === "stalled", {
      timeoutMs: 5000,
      message: "stalled there",
    });
    expect(stored(job.id)?.status).toBe("running");
    expect(opened!.snapshot().status).toBe("stalled");
    expect(shown).not.toContain("failed");
    // The supervisor's end is the watcher's.
    await job.cancel("over");
    expect(await opened!.done()).toMatchObject({ status: "failed", reason: "cancelled: over" });
  } finally {
    await watcher.stop();
    await supervisor.stop();
  }
});

it("a watcher that found no answers stored counts the first one as progress: no stall until stallAfterMs after it", async () => {
  const { server, supervisor, clock, watcher } = await setUp();
  const answering = await createTestRuntime({ name: "worker", broker: createMemoryBroker({ server }) });
  let answers = 0;
  try {
    const job = await supervisor.jobs.submit({ queue: "firstanswer", tasks: [0, 1, 2], stallAfterMs: 1500 });
    const opened = await watcher.jobs.get(job.id);
    clock.advance(1000);
    // One task answered, the others held: the only answer the watcher counts is a live one.
    const worker = answering.workers.start<number, number>({
      queue: "firstanswer",
      handler: async (task, ctx) => {
        if (answers++ > 0) await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
        return task.payload;
      },
    });
    await waitUntil(() => opened!.snapshot().done === 1, {
      timeoutMs: 5000,
      message: "the answer counted there",
    });
    // 1,400 ms after the answer on the watcher's clock (2,400 after it opened the job): not stalled.
    for (let n = 0; n < 14; n++) {
      clock.advance(100);
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(opened!.snapshot().status).toBe("running");
    await job.cancel("over");
    await worker.stop();
  } finally {
    await answering.stop();
    await watcher.stop();
    await supervisor.stop();
  }
});
