/**
 * What the dashboard's overview reads: the jobs not over (one supervision
 * lease each), each record once when first met, then kept from the job
 * events; never the finished records kept, and nothing per job on a
 * refresh (a page refreshes every 3 s). The oracle is the broker's own
 * ledger of calls (a counting proxy) and the ids the test's submits got.
 */
import { describe, expect, it } from "vitest";
import { createDashboard } from "../../src/index.ts";
import { createMemoryBroker, createTestRuntime } from "../../src/testing.ts";
import { finishedRecord } from "../harness/finished-records.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil } from "../harness/wait.ts";

const TOKEN = "dashboard-cost-token-0123456789";

describe("the dashboard's overview", () => {
  it("reads each live job once, and none of the 2,000 finished ones kept", async () => {
    const inner = createMemoryBroker({ prefix: "jetstate" });
    const at = Date.now();
    for (let n = 0; n < 2000; n++) await inner.createRecord(finishedRecord(n, at, "cost"));
    const { broker, calls } = spiedBroker(inner);
    const rt = await createTestRuntime({ broker, jobs: { cleanupIntervalMs: 0 } });
    try {
      // Submitted before the dashboard exists: it learns of them from the leases, not from events.
      const jobs = await Promise.all(
        Array.from({ length: 20 }, (_, n) => rt.jobs.submit({ queue: "cost", tasks: [{ n }] })),
      );
      const dashboard = createDashboard(rt, {
        tokens: { [TOKEN]: { identity: "ops", role: "read", queues: "*" } },
      });
      const overview = async () => {
        const res = await dashboard.fetch(
          new Request("http://test/api/overview", { headers: { authorization: `Bearer ${TOKEN}` } }),
        );
        expect(res.status).toBe(200);
        return (await res.json()) as { jobs: { id: string; status: string }[] };
      };
      let before = new Map(calls);
      const since = (name: string) => (calls.get(name) ?? 0) - (before.get(name) ?? 0);

      const first = await overview();
      expect(first.jobs.map((j) => j.id).sort()).toEqual(jobs.map((j) => j.id).sort());
      expect(since("getRecord")).toBe(20);
      expect(since("listRecords") + since("listRecordsPage")).toBe(0);

      before = new Map(calls);
      await overview();
      expect(since("getRecord")).toBe(0);

      // A change comes from the events, not from a read.
      await jobs[0]!.cancel("cost test");
      await waitUntil(
        async () => (await overview()).jobs.find((j) => j.id === jobs[0]!.id)?.status === "failed",
        {
          timeoutMs: 5000,
          message: "the cancelled job shown failed",
        },
      );
      before = new Map(calls);
      const after = await overview();
      expect(since("getRecord")).toBe(0);
      expect(after.jobs).toHaveLength(20);
    } finally {
      await rt.stop();
    }
  });
});
