/**
 * The cleanup pass on a large leftover of held tasks (a job of thousands
 * whose end could not remove them): they were deleted, one by one, inside
 * the pass's one operation, and a leftover larger than that operation's
 * deadline allowed failed the pass (50,000 held tasks at the default 10 s;
 * here 5,000 at 1 s): nothing after it ran (leases, records) and its report
 * was lost. The oracle: the queue's delayed stream read raw.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { type FaultBench, natsBench } from "../harness/fault-runtimes.ts";

let bench: FaultBench;
beforeAll(async () => {
  bench = await natsBench();
});
afterAll(async () => {
  await bench?.dispose();
});

it("removes thousands of a job's held tasks past the operation's deadline, and the pass ends", async () => {
  const queue = "held-large";
  const { rt, faults } = await bench.runtime({ connection: { operationTimeoutMs: 1000 } });
  const held = 5000;
  const doomed = await rt.jobs.submit({
    queue,
    tasks: Array.from({ length: held }, (_, i) => i),
    runAt: Date.now() + 3_600_000,
  });
  expect(await bench.rawHeld(queue, doomed.id)).toBe(held);
  faults.fail("removeTasks", Number.POSITIVE_INFINITY, doomed.id);
  // The cancel stands; its clean-up failed (cancel-cleanup-failed.both.test.ts).
  await expect(doomed.cancel("test")).resolves.toMatchObject({ status: "failed" });
  expect(faults.injected("removeTasks")).toBeGreaterThan(0);
  const report = await rt.admin.cleanup();
  expect(report.tasksPurged).toContain(`jetstate.delayed.${queue}.${doomed.id}`);
  expect(await bench.rawHeld(queue, doomed.id)).toBe(0);
}, 60_000);
