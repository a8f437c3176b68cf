/**
 * A handler's error the worker cannot classify as it planned its answer: the
 * user's `isPermanent` throws (`(e) => e.response.status === 404` on an
 * error with no response), or the error cannot be made text
 * (`Object.create(null)`, a throwing `toString`). The worker logged "task
 * not answered" and left the task running: its slot taken and its lease
 * kept until `maxTaskMs` (15 min), nothing redelivered meanwhile. Now such
 * an error is a failure to retry. The oracle: the handler's own ledger of
 * runs, and the job's end.
 */
import { describe, expect, it } from "vitest";
import { createTestRuntime } from "../../src/testing.ts";
import { within } from "../harness/wait.ts";

const unprintable = () => {
  const error = Object.create(null) as object;
  return error;
};
const throwingText = () => ({
  toString: () => {
    throw new Error("no text");
  },
});

describe("a handler's error the worker cannot classify", () => {
  it.each([
    ["isPermanent throws", () => new Error("upstream said 500"), true],
    ["an error with no prototype", unprintable, false],
    ["an error whose toString throws", throwingText, false],
  ] as const)("%s: the task is tried again, the job ends", async (_name, makeError, predicateThrows) => {
    const rt = await createTestRuntime();
    const runs: number[] = [];
    const worker = rt.workers.start<number, number>({
      queue: "unclassifiable",
      concurrency: 1,
      ...(predicateThrows
        ? {
            isPermanent: (error: unknown) =>
              (error as { response: { status: number } }).response.status === 404,
          }
        : {}),
      handler: (task) => {
        const { attempt } = task;
        runs.push(attempt);
        if (attempt === 1) throw makeError();
        return task.payload;
      },
    });
    try {
      const job = await rt.jobs.submit({
        queue: "unclassifiable",
        tasks: [1, 2],
        maxDeliver: 3,
        backoff: [0],
      });
      expect(await within(job.done(), 10_000)).toMatchObject({ status: "succeeded", done: 2 });
      expect([...runs].sort()).toEqual([1, 1, 2, 2]);
    } finally {
      await worker.stop();
      await rt.stop();
    }
  });
});
