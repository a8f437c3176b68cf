/**
 * A flow whose node is a lane job, cancelled while that job's commit is not
 * written yet (its record still says `submitting`; the task, held by its
 * handler, says it committed). The clock never moves, so the commit's
 * write a second on never comes: the flow's cancel must reach the job
 * through what says it committed, not wait for that write. The oracle is
 * the handler's own signal and the job's stored record, read raw.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import type { Runtime } from "../../src/api/runtime.ts";
import { createMemoryBroker, createTestRuntime, ManualClock } from "../../src/testing.ts";

let rt: Runtime;
let broker: ReturnType<typeof createMemoryBroker>;
beforeAll(async () => {
  const clock = new ManualClock();
  broker = createMemoryBroker({ clock });
  rt = await createTestRuntime({ clock, broker, jobs: { lane: true } });
});
afterAll(async () => {
  await rt?.stop();
});

it("a flow cancelled while its lane job's commit is unwritten cancels that job at once", async () => {
  let aborted!: () => void;
  const cancelled = new Promise<void>((resolve) => (aborted = resolve));
  let started!: () => void;
  const running = new Promise<void>((resolve) => (started = resolve));
  const worker = rt.workers.start({
    queue: "held",
    handler: async (_task, { signal }) => {
      started();
      await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
      aborted();
      return 0;
    },
  });
  try {
    const flow = await rt.flows.submit({ jobs: { only: { queue: "held", tasks: [{ n: 1 }] } } });
    await running;
    const jobId = flow.snapshot().nodes.only?.jobId as string;
    expect((await broker.getRecord(jobId))?.record).toMatchObject({ lane: true, phase: "submitting" });
    await flow.cancel("enough");
    await cancelled;
    expect((await broker.getRecord(jobId))?.record).toMatchObject({
      status: "failed",
      reason: expect.stringMatching(/flow cancelled/),
    });
    expect(await flow.done()).toMatchObject({ status: "cancelled", reason: "enough" });
  } finally {
    await worker.stop();
  }
});
