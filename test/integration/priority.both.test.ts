/**
 * Priorities on a busy worker (issue #19, item 3), on the memory broker and
 * on NATS: a concurrency-1 worker runs a priority-0 job of slow-ish tasks; a
 * priority-10 job submitted meanwhile has its tasks started before the
 * priority-0 job's remaining ones, except the turns the no-starvation rule
 * gives the longest-waiting job (one contested grant in `oldestEvery`), and
 * both end with exact counts. The oracle is the handler's own ledger of
 * starts (which job, which index, in order), never the runtime's word.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { oldestEvery } from "../../src/kernel/slots.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { memoryPool, natsPool, type RuntimePool } from "../harness/runtime-pools.ts";
import { waitUntil } from "../harness/wait.ts";

type Backend = RuntimePool;

const memoryBackend = (): Backend => memoryPool();
const natsBackend = (server: NatsServerHandle): Backend => natsPool(server.url);

let nats: NatsServerHandle;
beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.dispose();
});

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

const lowTasks = 60;
const highTasks = 24;
const taskMs = 15;

describe.each([
  { name: "memory", make: memoryBackend },
  { name: "nats", make: () => natsBackend(nats) },
])("priorities on the $name broker", ({ make }) => {
  it("starts a priority-10 job's tasks before a priority-0 job's, which still gets its turns and ends", async () => {
    const backend = make();
    try {
      // The worker's runtime is not the submitter's: the priority reaches it through the record.
      const rt = await backend.runtime("prio-worker");
      const submitter = await backend.runtime("prio-submitter");
      const ledger: Array<{ job: string; index: number }> = [];
      const worker = rt.workers.start<number, number>({
        queue: "prio",
        concurrency: 1,
        handler: async (task, ctx) => {
          ledger.push({ job: task.jobId, index: task.index });
          await sleep(taskMs, ctx.signal);
          return task.index;
        },
      });
      const low = await submitter.jobs.submit({
        queue: "prio",
        tasks: Array.from({ length: lowTasks }, (_, i) => i),
      });
      await waitUntil(() => ledger.length >= 3, { timeoutMs: 10_000, message: "the low job's first tasks" });
      const high = await submitter.jobs.submit({
        queue: "prio",
        tasks: Array.from({ length: highTasks }, (_, i) => i),
        priority: 10,
      });
      // Another runtime sees the priority (from the record).
      const seen = await rt.jobs.get(high.id);
      expect(seen?.snapshot().priority).toBe(10);
      expect(low.snapshot().priority).toBe(0);

      const [lowEnd, highEnd] = await Promise.all([low.done(), high.done()]);
      await worker.stop();
      expect(lowEnd).toMatchObject({ status: "succeeded", done: lowTasks, failed: 0, dead: 0 });
      expect(highEnd).toMatchObject({ status: "succeeded", done: highTasks, failed: 0, dead: 0 });
      // Each task started once: the counts are exact, nothing ran twice.
      const startsOf = (jobId: string) =>
        ledger
          .filter((s) => s.job === jobId)
          .map((s) => s.index)
          .sort((a, b) => a - b);
      expect(startsOf(low.id)).toEqual(Array.from({ length: lowTasks }, (_, i) => i));
      expect(startsOf(high.id)).toEqual(Array.from({ length: highTasks }, (_, i) => i));

      const order = ledger.map((s) => (s.job === high.id ? "H" : "L"));
      const firstHigh = order.indexOf("H");
      const lastHigh = order.lastIndexOf("H");
      const lowsAmongHighs = order.slice(firstHigh, lastHigh).filter((s) => s === "L").length;
      // Round robin would alternate (≈ highTasks lows in between). With priorities only the
      // oldest's turns go to the low job: one in oldestEvery contested grants, where every grant
      // is contested (one slot, both jobs waiting).
      expect(lowsAmongHighs, order.join("")).toBeLessThanOrEqual(
        Math.ceil(highTasks / (oldestEvery - 1)) + 1,
      );
      // …and it gets them: the low job is not starved while the high one runs.
      expect(lowsAmongHighs, order.join("")).toBeGreaterThanOrEqual(Math.floor(highTasks / oldestEvery) - 1);
      // The low job's tasks left when the high one came are mostly after the high job's.
      expect(order.slice(lastHigh).filter((s) => s === "L").length).toBeGreaterThan(lowTasks / 2);
    } finally {
      await backend.stop();
    }
  }, 30_000);
});
