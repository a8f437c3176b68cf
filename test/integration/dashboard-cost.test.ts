/**
 * What the dashboard's overview reads: the jobs not over (one supervision
 * lease each), each record once when first met, then kept from the job
 * events; never the finished records kept, and nothing per job on a
 * refresh (a page refreshes every 3 s). The oracle is the broker's own
 * ledger of calls (a counting proxy) and the ids the test's submits got.
 */
import { describe, expect, it } from "vitest";
import { jobBook } from "../../src/api/dashboard-streams.ts";
import { partsOf } from "../../src/api/runtime.ts";
import { createDashboard } from "../../src/index.ts";
import { createMemoryBroker, createTestRuntime } from "../../src/testing.ts";
import { finishedRecord } from "../harness/finished-records.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil } from "../harness/wait.ts";

const TOKEN = "dashboard-cost-token-0123456789";
const WITNESS = "dashboard-witness-token-0123456789";

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
      const overview = async (token = TOKEN) => {
        const res = await dashboard.fetch(
          new Request("http://test/api/overview", { headers: { authorization: `Bearer ${token}` } }),
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

describe("the dashboard's job book", () => {
  it("keeps the 100 most recent ended jobs with no page asking: 400 finished leave at most 100", async () => {
    const rt = await createTestRuntime({ jobs: { cleanupIntervalMs: 0 } });
    const book = jobBook(rt, partsOf(rt).broker);
    try {
      const worker = rt.workers.start<{ n: number }, number>({
        queue: "book",
        concurrency: 64,
        handler: async (task) => task.payload.n,
      });
      const handles = await Promise.all(
        Array.from({ length: 400 }, (_, n) => rt.jobs.submit({ queue: "book", tasks: [{ n }] })),
      );
      const ends = await Promise.all(handles.map((h) => h.done()));
      expect(ends.every((e) => e.status === "succeeded")).toBe(true);
      // One more, ended after all of them: once the book has it, it has read every earlier event.
      const last = await rt.jobs.submit({ queue: "book-last", tasks: [{ n: 0 }] });
      await last.cancel("the last one");
      await waitUntil(() => book.seen(last.id)?.status === "failed", {
        timeoutMs: 5000,
        message: "the last end in the book",
      });
      await worker.stop();
      expect(book.size().ended).toBe(100);
      expect(book.size().all).toBeLessThanOrEqual(100);
    } finally {
      await book.stop();
      await rt.stop();
    }
  });

  it("lists every active job first, then the most recent ended, and counts all of them in the queue table", async () => {
    const rt = await createTestRuntime({ jobs: { cleanupIntervalMs: 0 } });
    const dashboard = createDashboard(rt, {
      tokens: {
        [TOKEN]: { identity: "ops", role: "read", queues: "*" },
        [WITNESS]: { identity: "witness", role: "read", queues: ["witness"] },
      },
    });
    try {
      // No worker: 205 jobs stay running, more than the 200 an overview lists.
      const active = await Promise.all(
        Array.from({ length: 205 }, (_, n) => rt.jobs.submit({ queue: "many", tasks: [{ n }, { n }] })),
      );
      // Ended after them all: the most recently changed.
      const ended = await Promise.all(
        Array.from({ length: 3 }, (_, n) => rt.jobs.submit({ queue: "many", tasks: [{ n }] })),
      );
      for (const job of ended) await job.cancel("ended for the order test");
      const overview = async (token = TOKEN) => {
        const res = await dashboard.fetch(
          new Request("http://test/api/overview", { headers: { authorization: `Bearer ${token}` } }),
        );
        return (await res.json()) as {
          jobs: { id: string; status: string }[];
          queues: { name: string; activeJobs: number; unanswered: number }[];
        };
      };
      // The book reads its events in order: once it has this later end, it has the three before.
      const witness = await rt.jobs.submit({ queue: "witness", tasks: [{ n: 0 }] });
      await witness.cancel("the witness");
      await waitUntil(async () => (await overview(WITNESS)).jobs.some((j) => j.status === "failed"), {
        timeoutMs: 5000,
        message: "the witness's end in the book",
      });
      const o = await overview();
      expect(o.jobs).toHaveLength(200);
      const activeIds = new Set(active.map((j) => j.id));
      expect(o.jobs.every((j) => activeIds.has(j.id) && j.status === "running")).toBe(true);
      expect(o.queues).toContainEqual({ name: "many", activeJobs: 205, unanswered: 410, workers: 0 });
    } finally {
      await dashboard.stop();
      await rt.stop();
    }
  });
});
