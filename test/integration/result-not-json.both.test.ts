/**
 * A handler's result JSON cannot carry fails its task at once, on both
 * brokers: a BigInt or a cycle (`JSON.stringify` throws) as a function or a
 * symbol (it gives nothing). No delivery can store it, so a retry only runs
 * the handler again to the same end: they were retried until dead, their
 * error JSON's own ("Do not know how to serialize a BigInt"). The oracles:
 * the test's count of handler runs, and the job's counts and results as the
 * runtime stored them.
 */
import { describe, expect, it } from "vitest";
import type { Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { useRuntimeOn } from "../harness/runtime.ts";
import { within } from "../harness/wait.ts";

describe.each(["memory", "nats"] as const)("a result JSON cannot carry, on %s", (kind) => {
  let rt: Runtime;
  useRuntimeOn(kind, { logger: silentLogger() }, (started) => {
    rt = started;
  });

  it("fails its task at once, naming the task, never retried", async () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    const results: unknown[] = [1n, { big: 2n }, cycle, () => 1, "fine"];
    const runs = results.map(() => 0);
    const worker = rt.workers.start<number, unknown>({
      queue: "not_json",
      handler: ({ payload }) => {
        runs[payload] = (runs[payload] ?? 0) + 1;
        return results[payload];
      },
    });
    try {
      const job = await rt.jobs.submit<number, unknown>({
        queue: "not_json",
        tasks: results.map((_, n) => n),
        maxFailures: 1,
        maxDeliver: 3,
        backoff: [10],
      });
      expect(await within(job.done(), 15_000)).toMatchObject({ done: 1, failed: 4, dead: 0 });
      expect(runs).toEqual([1, 1, 1, 1, 1]);
      const errors: Record<number, unknown> = {};
      for await (const r of job.results()) errors[r.index] = r.ok ? r.result : r.error;
      expect(errors[0]).toMatch(/^result of task 0 cannot be serialised to JSON \(.*BigInt/);
      expect(errors[1]).toMatch(/^result of task 1 cannot be serialised to JSON \(.*BigInt/);
      expect(errors[2]).toMatch(/^result of task 2 cannot be serialised to JSON \(.*circular/);
      expect(errors[3]).toBe("result of task 3 cannot be serialised to JSON (a function or a symbol)");
      expect(errors[4]).toBe("fine");
    } finally {
      await worker.stop();
    }
  }, 30_000);
});
