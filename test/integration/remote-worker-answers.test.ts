/**
 * examples/remote-worker.ts answering what a handler did, whatever it did:
 * an error thrown with no message, and a result JSON cannot carry (a BigInt, a function),
 * are that task's error results; the other tasks of the batch are answered as
 * their handlers returned. The API refuses a request with one invalid item
 * whole, so a batch sent with such an item lost every answer in it: its tasks
 * ran again and died. The oracles: the test's own ledger of handler runs, and
 * the job's counts and results as the runtime stored them.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { runRemoteWorker } from "../../examples/remote-worker.ts";
import { createHttpApi } from "../../src/api/http.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { createTestRuntime } from "../../src/testing.ts";
import { type ServedApp, serveOnLoopback } from "../harness/http-server.ts";
import { within } from "../harness/wait.ts";

const token = "remote-answers-token-0123";
let rt: Runtime;
let http: ServedApp;

beforeAll(async () => {
  rt = await createTestRuntime({ jobs: { lane: false } });
  http = await serveOnLoopback(createHttpApi(rt, { tokens: { [token]: "box-1" } }).fetch);
});
afterAll(async () => {
  await http?.close();
  await rt?.stop();
});

it("an error without a message and a result JSON cannot carry are the task's own error results", async () => {
  const job = await rt.jobs.submit<{ n: number }, unknown>({
    queue: "answers",
    tasks: [0, 1, 2, 3, 4].map((n) => ({ n })),
    maxFailures: 0.6,
    maxDeliver: 3,
    backoff: [10],
    ackWaitMs: 2000,
  });
  const runs: number[] = [];
  const stop = new AbortController();
  const worker = runRemoteWorker<{ n: number }, unknown>({
    baseUrl: http.baseUrl,
    token,
    queue: "answers",
    batchSize: 5,
    isPermanent: () => true,
    signal: stop.signal,
    handler: ({ n }) => {
      runs.push(n);
      if (n === 0) throw new Error();
      if (n === 1) return { big: 10n };
      if (n === 4) return () => n;
      return n * 2;
    },
  });
  try {
    const end = await within(job.done(), 15_000);
    expect(end).toMatchObject({ status: "succeeded", done: 2, failed: 3, dead: 0 });
    // Each task ran once: no answer was lost with its batch.
    expect(runs.sort()).toEqual([0, 1, 2, 3, 4]);
    const results: Record<number, unknown> = {};
    for await (const r of job.results()) results[r.index] = r.ok ? r.result : r.error;
    expect(results[0]).toBe("Error");
    expect(results[1]).toMatch(/^result not sent: .*BigInt/);
    expect([results[2], results[3]]).toEqual([4, 6]);
    expect(results[4]).toBe("result not sent: not a JSON value");
  } finally {
    stop.abort();
    await worker;
  }
});
