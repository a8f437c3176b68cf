/**
 * A job cancelled while its worker's record watch lags behind (the worker's
 * runtime hears no write of the job: `faults.unheard`). The worker's pull
 * loop finds the job's consumer deleted and its record ended first, and its
 * loop ended there: the job was forgotten without its end, so the end heard
 * later found nothing to end, and the running handlers never saw their
 * signals abort (they ran on, and answered a job that was over). The oracle:
 * what the handlers' signals say, recorded by the handlers themselves.
 */
import { describe, expect, it } from "vitest";
import { memoryBench, natsBench } from "../harness/fault-runtimes.ts";
import { waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memoryBench],
  ["nats", natsBench],
] as const)(
  "a job whose end reaches its worker's pull loop before its record watch, on %s",
  (_kind, makeBench) => {
    it("aborts the handlers still running", async () => {
      const bench = await makeBench();
      try {
        const submitter = await bench.runtime();
        const workers = await bench.runtime();
        const aborted: number[] = [];
        let started = 0;
        const worker = workers.rt.workers.start<number, number>({
          queue: "unheard_end",
          concurrency: 2,
          handler: (task, { signal }) =>
            new Promise<number>((resolve) => {
              started++;
              signal.addEventListener("abort", () => {
                aborted.push(task.index);
                resolve(task.payload);
              });
              // Not forever: a handler that never hears it answers after the test's wait.
              setTimeout(() => resolve(task.payload), 8000);
            }),
        });
        try {
          const job = await submitter.rt.jobs.submit({ queue: "unheard_end", tasks: [1, 2], lane: false });
          await waitUntil(() => started === 2, { timeoutMs: 10_000, message: "both tasks running" });
          workers.faults.unheard(job.id);
          await job.cancel("enough");
          await waitUntil(() => aborted.length === 2, {
            timeoutMs: 5000,
            message: "both running handlers told of the cancel",
          });
          expect([...aborted].sort()).toEqual([0, 1]);
        } finally {
          await worker.stop();
        }
      } finally {
        await bench.dispose();
      }
    }, 30_000);
  },
);
