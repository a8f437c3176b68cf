/**
 * A job's dashboard stream says no end before the job's record does, as its
 * handle does: the end its actor decided is being written, and a write that
 * fails (a cancel from another process, a redrive) may yet end the job
 * otherwise. The oracle is the record read through the broker port of a
 * runtime that has no actor of the job, and the faults the test injected.
 */
import { describe, expect, it } from "vitest";
import type { DashboardJob } from "../../src/adapters/http/dashboard-app.ts";
import { streamJob } from "../../src/api/dashboard-streams.ts";
import { partsOf } from "../../src/api/runtime.ts";
import { memoryBench } from "../harness/fault-runtimes.ts";
import { waitUntil } from "../harness/wait.ts";

describe("a job's dashboard stream", () => {
  it("shows the end its actor decided only once the record says it", async () => {
    const bench = await memoryBench();
    try {
      const r = await bench.runtime();
      const reader = await bench.runtime({ jobs: { takeOver: false } });
      r.faults.fail("finalize", Number.POSITIVE_INFINITY);
      const worker = r.rt.workers.start<number, number>({ queue: "q", handler: (t) => t.payload });
      const job = await r.rt.jobs.submit({ queue: "q", tasks: [1, 2, 3] });
      const { jobs, broker } = partsOf(r.rt);
      const sent: Array<{ name: string; data: { status?: string; value?: unknown } }> = [];
      const ac = new AbortController();
      const streaming = streamJob(
        r.rt,
        jobs,
        broker,
        // What the stream reads of the listed job: its id and queue.
        { id: job.id, queue: "q" } as DashboardJob,
        (name, data) => void sent.push({ name, data: data as never }),
        ac.signal,
      );
      await waitUntil(() => r.faults.injected("finalize") >= 2, {
        timeoutMs: 10_000,
        message: "the end's write to fail (twice)",
      });
      // The record, as another runtime reads it: not over.
      expect((await reader.broker.getRecord(job.id))?.record.status).toBe("running");
      const progress = () => sent.filter((e) => e.name === "progress").map((e) => e.data.status);
      expect(progress().length).toBeGreaterThan(0);
      expect(progress()).not.toContain("succeeded");

      r.faults.heal("finalize");
      await waitUntil(() => progress().at(-1) === "succeeded", {
        timeoutMs: 10_000,
        message: "the end on the stream once written",
      });
      expect((await reader.broker.getRecord(job.id))?.record.status).toBe("succeeded");
      ac.abort();
      await streaming;
      await worker.stop();
    } finally {
      await bench.dispose();
    }
  });
});
