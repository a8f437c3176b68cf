/**
 * What a handler's signal says when its job is cancelled: an abort of its
 * own, the `DOMException` named `AbortError` the platform gives (`fetch`
 * with the signal rejects with it), never an object shared with another
 * job's handlers. The oracle is the platform's own type and object identity.
 */
import { describe, expect, it } from "vitest";
import { createTestRuntime } from "../../src/testing.ts";
import { waitUntil } from "../harness/wait.ts";

describe("a handler's signal when its job is cancelled", () => {
  it("aborts with a DOMException of its own, not one shared with another job's handler", async () => {
    const rt = await createTestRuntime();
    const reasons: unknown[] = [];
    const started: Array<() => void> = [];
    const worker = rt.workers.start<number, number>({
      queue: "q",
      concurrency: 2,
      handler: (_task, { signal }) =>
        new Promise<number>((resolve) => {
          signal.addEventListener("abort", () => {
            reasons.push(signal.reason);
            resolve(0);
          });
          started.shift()?.();
        }),
    });
    for (const n of [1, 2]) {
      const running = new Promise<void>((resolve) => started.push(resolve));
      const job = await rt.jobs.submit({ queue: "q", tasks: [n] });
      await running;
      await job.cancel(`stop ${n}`);
      await job.done();
    }
    await worker.stop();
    await rt.stop();
    expect(reasons).toHaveLength(2);
    for (const reason of reasons) {
      expect(reason).toBeInstanceOf(DOMException);
      expect((reason as DOMException).name).toBe("AbortError");
    }
    expect(reasons[0]).not.toBe(reasons[1]);
  });

  it("kept after its handler returned (work it started holds it), aborts as its job ends with one of its own too", async () => {
    const rt = await createTestRuntime();
    const signals: AbortSignal[] = [];
    const worker = rt.workers.start<number, number>({
      queue: "q",
      handler: (task, { signal }) => {
        signals.push(signal);
        return task.payload;
      },
    });
    for (const n of [1, 2]) await (await rt.jobs.submit({ queue: "q", tasks: [n] })).done();
    await waitUntil(() => signals.length === 2 && signals.every((s) => s.aborted), {
      timeoutMs: 5000,
      message: "both handlers' signals aborted as their jobs ended",
    });
    await worker.stop();
    await rt.stop();
    for (const signal of signals) {
      expect(signal.reason).toBeInstanceOf(DOMException);
      expect((signal.reason as DOMException).name).toBe("AbortError");
    }
    expect(signals[0]!.reason).not.toBe(signals[1]!.reason);
  });
});
