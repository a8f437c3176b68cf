/**
 * What an HTTP worker's reserve from a queue reads: the jobs that may run
 * (those holding a supervision lease), not every record kept. It listed
 * every record, again each second while HTTP workers polled: with 100,000
 * finished jobs kept that was a 1.4 s listing per second. The oracle is the
 * broker's own ledger of calls (a counting proxy) and the task the worker
 * gets, checked against what was submitted.
 */
import { describe, expect, it } from "vitest";
import { createHttpApi } from "../../src/api/http.ts";
import { createMemoryBroker, createTestRuntime } from "../../src/testing.ts";
import { finishedRecord } from "../harness/finished-records.ts";
import { spiedBroker } from "../harness/spied-broker.ts";

const TOKEN = "worker-token-0123456789";

describe("an HTTP reserve from a queue", () => {
  it("reads the jobs that run, not the 3,000 finished ones kept", async () => {
    const inner = createMemoryBroker({ prefix: "jetstate" });
    const at = Date.now();
    for (let n = 0; n < 3000; n++) await inner.createRecord(finishedRecord(n, at, "http"));
    const { broker, calls } = spiedBroker(inner);
    const rt = await createTestRuntime({ broker, jobs: { cleanupIntervalMs: 0 } });
    try {
      const job = await rt.jobs.submit({ queue: "http", tasks: [{ n: 7 }] });
      const api = createHttpApi(rt, {
        tokens: { [TOKEN]: { identity: "box", role: "worker", queues: ["http"] } },
      });
      const before = new Map(calls);
      const since = (name: string) => (calls.get(name) ?? 0) - (before.get(name) ?? 0);
      const response = await api.fetch(
        new Request("http://test/queues/http/tasks", {
          method: "POST",
          headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
          body: JSON.stringify({ batch_size: 5 }),
        }),
      );
      expect(response.status).toBe(200);
      const body = (await response.json()) as {
        tasks: { job_id?: string; jobId?: string; payload: unknown }[];
      };
      expect(body.tasks.map((t) => t.payload)).toEqual([{ n: 7 }]);
      expect(since("listRecords")).toBe(0);
      // The live job's record, read when listed and again before its tasks are leased.
      expect(since("getRecord")).toBeLessThan(10);
      await job.cancel("test over");
    } finally {
      await rt.stop();
    }
  });
});
