/**
 * A job cancelled while its worker's record watch lags behind (the worker's
 * runtime hears no write of the job: `faults.unheard`). The worker's pull
 * loop finds the job's consumer deleted and its record ended first, and its
 * loop ended there: the job was forgotten without its end, so the end heard
 * later found nothing to end, and the running handlers never saw their
 * signals abort (they ran on, and answered a job that was over). The
 * oracles: how the worker's task loop of the job ended, as the broker
 * wrapper saw it answer (`faults.loopEnds`: the path under test was taken),
 * and what the handlers' signals say, recorded by the handlers themselves.
 */
import { describe, expect, it } from "vitest";
import { memoryBench, natsBench } from "../harness/fault-runtimes.ts";
import { gate, waitUntil } from "../harness/wait.ts";

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
        // Opened once the test has seen what it waits for (or given up): a handler not aborted by then answers.
        const testOver = gate();
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
              // Not forever: a handler that never hears it answers once the test is over, before the worker stops.
              void testOver.opened.then(() => resolve(task.payload));
            }),
        });
        try {
          const job = await submitter.rt.jobs.submit({ queue: "unheard_end", tasks: [1, 2], lane: false });
          await waitUntil(() => started === 2, { timeoutMs: 10_000, message: "both tasks running" });
          workers.faults.unheard(job.id);
          await job.cancel("enough");
          // What the test is about: the worker's loop of the job finds its consumer gone and its
          // record ended, while its record watch hears nothing of the job.
          await waitUntil(() => workers.faults.loopEnds(job.id).includes("gone"), {
            timeoutMs: 10_000,
            message: () =>
              `the job's task loop ended on its consumer gone (ends: ${workers.faults.loopEnds(job.id)})`,
          });
          // That end is the job's end for the worker, told to its handlers as the loop's answer comes
          // (a few promise steps): a deadline of 2 s is only room for a busy machine.
          await waitUntil(() => aborted.length === 2, {
            timeoutMs: 2000,
            message: () => `both running handlers told of the cancel once the loop ended (told: ${aborted})`,
          });
          expect([...aborted].sort()).toEqual([0, 1]);
        } finally {
          testOver.open();
          await worker.stop();
        }
      } finally {
        await bench.dispose();
      }
    }, 30_000);
  },
);
