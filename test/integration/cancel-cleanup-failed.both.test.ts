/**
 * A cancel whose end is recorded but whose clean-up (the removal of the
 * job's tasks and consumer) fails, the broker not answering: the job is
 * cancelled, so `cancel()` resolves with that end, says the removal failed
 * at warn, and the cleanup pass removes what is left. Before, `cancel()`
 * rejected with the removal's `TransientBrokerError` though the end was
 * stored, and a caller that tried again was answered the end with nothing
 * removed. On both brokers, from the submitting runtime and from another;
 * the oracles are the job's record and task messages read raw.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FaultBench, memoryBench, natsBench } from "../harness/fault-runtimes.ts";
import { capturedLog } from "../harness/log-lines.ts";

describe.each([
  { name: "memory", make: memoryBench },
  { name: "nats", make: natsBench },
])("a cancel whose clean-up fails, on $name", ({ make }) => {
  let bench: FaultBench;
  beforeAll(async () => {
    bench = await make();
  });
  afterAll(async () => {
    await bench?.dispose();
  });

  it.each([
    { from: "the submitting runtime", lane: true },
    { from: "the submitting runtime", lane: false },
    { from: "another runtime", lane: true },
    { from: "another runtime", lane: false },
  ])(
    "resolves with the end, from $from (lane: $lane); the pass removes the tasks",
    async ({ from, lane }) => {
      const queue = `cancel-left-${lane ? "lane" : "own"}-${from === "another runtime" ? "b" : "a"}`;
      const log = capturedLog("warn");
      const other = from === "another runtime";
      const submitter = await bench.runtime(other ? {} : { logger: log.logger });
      const canceller = other ? await bench.runtime({ logger: log.logger }) : undefined;
      // No worker: the tasks stay stored until something removes them.
      const job = await submitter.rt.jobs.submit({ queue, tasks: [1, 2, 3], lane });
      expect(await bench.rawTasks(queue, job.id)).toBe(3);
      const { rt, faults } = canceller ?? submitter;
      const handle = canceller ? await canceller.rt.jobs.get(job.id) : job;
      faults.fail("removeTasks", Number.POSITIVE_INFINITY, job.id);

      const end = await handle!.cancel("not needed");
      expect(end).toMatchObject({ status: "failed", reason: "cancelled: not needed" });
      expect(faults.injected("removeTasks")).toBeGreaterThan(0);
      expect(await rt.jobs.record(job.id)).toMatchObject({
        status: "failed",
        reason: "cancelled: not needed",
      });
      expect(await bench.rawTasks(queue, job.id)).toBe(3);
      expect(log.lines.filter((l) => l.jobId === job.id && /not removed/.test(l.msg))).toHaveLength(1);

      faults.heal("removeTasks");
      await rt.admin.cleanup();
      expect(await bench.rawTasks(queue, job.id)).toBe(0);
      await canceller?.stop();
      await submitter.stop();
    },
  );
});
