/**
 * A stalled job taken over after its stalled timeout has run out, whose
 * tasks were answered while nobody supervised it (its supervisor stopped,
 * a worker came back): its record still says stalled, with no answer. The
 * answers the record lacks are progress, which the takeover's replay of the
 * results finds. The stalled timeout must not end the job before that replay
 * is counted: the supervisor's first tick (a few tens of milliseconds on)
 * failed it "stalled too long" while its results were still being read, and
 * a job whose every task was answered ended failed. Here the replay takes
 * a second (the new supervisor's results feed starts late), within the
 * stalled timeout that bounds how long a supervisor waits for a replay.
 * The oracle: the record as the server stores it.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { memorySide, natsSide } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil } from "../harness/wait.ts";

const stalledTimeoutMs = 3000;

/** The runtime's results feeds start `ms` late: its replay of a job's results takes that long. */
const lateFeeds = (ms: number) => (inner: Broker) =>
  spiedBroker(inner, (name, _n, _args, call) => {
    if (name !== "followResults") return call();
    let stop: (() => void) | undefined;
    let stopped = false;
    setTimeout(() => {
      if (!stopped) stop = call() as () => void;
    }, ms);
    return () => {
      stopped = true;
      stop?.();
    };
  }).broker;

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a stalled job taken over after its stalled timeout, on %s", (_kind, makeSide) => {
  it("is judged on the answers its replay finds, not failed before they are read", {
    timeout: 40_000,
  }, async () => {
    const side = await makeSide();
    const a = await side.runtime("a");
    // Works, never supervises.
    const w = await side.runtime("w", undefined, false);
    let b: Awaited<ReturnType<typeof side.runtime>> | undefined;
    try {
      const job = await a.jobs.submit<number, number>({
        queue: "replay",
        tasks: [1, 2],
        stallAfterMs: 200,
        stalledTimeoutMs,
      });
      await waitUntil(async () => (await side.stored(job.id))?.status === "stalled", {
        timeoutMs: 10_000,
        message: "the job, with no worker, stalled",
      });
      const stalledAt = Date.now();
      // Its supervisor stops (its lease given back): nobody counts what comes next.
      await a.stop();
      const ran: number[] = [];
      const worker = w.workers.start<number, number>({
        queue: "replay",
        handler: (task) => {
          ran.push(task.index);
          return task.payload * 2;
        },
      });
      await waitUntil(() => ran.length === 2, { timeoutMs: 10_000, message: "both tasks answered" });
      await worker.stop(); // its answers stored
      expect(await side.stored(job.id)).toMatchObject({ status: "stalled", counts: { done: 0 } });
      // Past the stalled timeout: the job is due to fail, on its record alone.
      const overdue = stalledAt + stalledTimeoutMs + 200 - Date.now();
      if (overdue > 0) await new Promise((resolve) => setTimeout(resolve, overdue));
      b = await side.runtime("b", lateFeeds(1000));
      await waitUntil(
        async () => {
          const status = (await side.stored(job.id))?.status;
          return status === "succeeded" || status === "failed";
        },
        { timeoutMs: 15_000, message: "the job taken over and ended" },
      );
      // Before: { status: "failed", reason: "stalled too long …", counts: { done: 0 } }.
      expect(await side.stored(job.id)).toMatchObject({
        status: "succeeded",
        counts: { done: 2, failed: 0, dead: 0 },
      });
    } finally {
      await b?.stop();
      await w.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
