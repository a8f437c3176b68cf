import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createHttpApi } from "../../src/api/http.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { heldLedger, limitedFirstJob } from "../harness/held-ledger.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { reconnectingBroker } from "../harness/restartable-broker.ts";
import { useStoreResetPool } from "../harness/store-reset-pool.ts";
import { type StoredQueueRecord, storedQueueRecord } from "../harness/stored-queue-record.ts";
import { waitUntil, within } from "../harness/wait.ts";

const names = brokerNames("jetstate");
const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => i + from);

/** The queue's record as the server holds it, read on a client of the test's own. */
const storedRecord = async (server: NatsServerHandle, queue: string): Promise<StoredQueueRecord> => {
  const nc = await connect({ servers: server.url, name: "raw" });
  try {
    return await storedQueueRecord(nc, names.queuesBucket, queue);
  } finally {
    await nc.close();
  }
};

/**
 * The server back with an empty store takes the queue's record (its limits)
 * with it. A runtime that saw the limits writes the record back as it saw
 * it: before, the queue ran unlimited until an admin configured it again (a
 * GPU queue at `maxConcurrency: 2` ran as many handlers as its workers had
 * room for). A record the user deleted stays deleted.
 */
describe("a queue's limits and the server back with an empty store", () => {
  const env = useStoreResetPool();

  it("workers that read the limits write them back: never more than maxConcurrency run", async () => {
    const queue = "gpu";
    // The admin that configured the queue is gone by the reset: only the workers saw the limits.
    const admin = await env.runtimes.runtime("admin");
    await admin.queues.configure(queue, { maxConcurrency: 2 });
    await admin.stop();
    const [a, b] = [await env.runtimes.runtime("a"), await env.runtimes.runtime("b")];
    const { ledger, ran, runThrough, workers } = await limitedFirstJob([a, b], queue, 2);
    expect(ledger.most).toBe(2);

    await env.server.restartEmpty();
    const tasks = range(8, 100);
    const next = await b.jobs.submit({ queue, tasks, ackWaitMs: 20_000 });
    await runThrough(tasks, 2, 30_000);
    expect(await within(next.done(), 20_000)).toMatchObject({ status: "succeeded", done: 8, total: 8 });
    for (const w of workers) await w.stop();
    expect({ ran: ran.size, most: ledger.most, stored: await storedRecord(env.server, queue) }).toEqual({
      ran: 12,
      most: 2,
      stored: { operation: "PUT", maxConcurrency: 2 },
    });
  }, 120_000);

  it("permits held at the reset: up to 2N run until their holders end, N after", async () => {
    const queue = "gpu_held";
    const [e, f] = [await env.runtimes.runtime("e"), await env.runtimes.runtime("f")];
    await e.queues.configure(queue, { maxConcurrency: 2 });
    const { handler, ledger, running, runThrough, open } = heldLedger();
    const workers = [
      e.workers.start<number, number>({ queue, concurrency: 4, handler }),
      f.workers.start<number, number>({ queue, concurrency: 4, handler }),
    ];
    await e.jobs.submit({ queue, tasks: range(2), ackWaitMs: 20_000 });
    await waitUntil(() => running.size === 2, { timeoutMs: 20_000, message: "both permits held" });

    await env.server.restartEmpty();
    const tasks = range(8, 100);
    const next = await f.jobs.submit({ queue, tasks, ackWaitMs: 20_000 });
    const newRunning = () => [...running].filter((i) => i >= 100).length;
    // The pool seeded again gives its N while the old holders (of a consumer's life that is
    // over) still run: the bound the docs give.
    await waitUntil(() => newRunning() >= 2, { timeoutMs: 30_000, message: "new tasks running" });
    const during = ledger.most;
    open(range(2));
    await waitUntil(() => running.size === newRunning(), { timeoutMs: 10_000, message: "old holders ended" });
    ledger.most = running.size;
    await runThrough(tasks, 2, 30_000);
    expect(await within(next.done(), 20_000)).toMatchObject({ status: "succeeded", done: 8 });
    for (const w of workers) await w.stop();
    // 2 old holders and at least 2 new ones were running: 4 is the bound met, not passed.
    expect({ during, after: ledger.most }).toEqual({ during: 4, after: 2 });
  }, 120_000);

  it("the runtime that configured the queue writes it back, with no worker alive", async () => {
    const queue = "gpu_admin";
    const admin = await env.runtimes.runtime("admin2");
    await admin.queues.configure(queue, { maxConcurrency: 2 });
    await env.server.restartEmpty();
    await waitUntil(async () => (await storedRecord(env.server, queue)) !== "none", {
      timeoutMs: 30_000,
      message: "the queue's record stored again",
    });
    expect(await storedRecord(env.server, queue)).toEqual({ operation: "PUT", maxConcurrency: 2 });
    // A worker started after the reset reads the limits, and its pool has its permits.
    const { handler, ledger, ran, runThrough } = heldLedger();
    const c = await env.runtimes.runtime("c");
    const worker = c.workers.start<number, number>({ queue, concurrency: 6, handler });
    const tasks = range(6);
    const job = await c.jobs.submit({ queue, tasks, ackWaitMs: 20_000 });
    await runThrough(tasks, 2, 30_000);
    expect(await within(job.done(), 20_000)).toMatchObject({ status: "succeeded", done: 6 });
    await worker.stop();
    expect({ ran: ran.size, most: ledger.most }).toEqual({ ran: 6, most: 2 });
  }, 120_000);

  it("the HTTP pull API that read the limits writes them back: never more than maxConcurrency leased", async () => {
    const queue = "gpu_http";
    const admin = await env.runtimes.runtime("admin3");
    await admin.queues.configure(queue, { maxConcurrency: 2 });
    await admin.stop();
    const remote = await env.runtimes.runtime("remote");
    const token = "token-store-reset-0123456789";
    const api = createHttpApi(remote, { tokens: { [token]: "remote" } });
    const post = async (path: string, body: unknown) => {
      const response = await api.fetch(
        new Request(`http://api${path}`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        }),
      );
      expect(response.status, path).toBe(200);
      return (await response.json()) as { tasks?: Array<{ job_id: string; receipt: string; index: number }> };
    };
    /**
     * Pulls of up to 6 tasks, each lease answered once the pull is counted, until `total` are
     * answered: the most leased at once (the HTTP workers' own ledger).
     */
    const leaseThrough = async (total: number) => {
      let answered = 0;
      let most = 0;
      await waitUntil(
        async () => {
          const { tasks = [] } = await post(`/queues/${queue}/tasks`, { batch_size: 6 });
          most = Math.max(most, tasks.length);
          for (const t of tasks)
            await post(`/jobs/${t.job_id}/results`, { results: [{ receipt: t.receipt, result: t.index }] });
          answered += tasks.length;
          return answered >= total;
        },
        { timeoutMs: 30_000, message: () => `${total} tasks leased and answered (${answered} so far)` },
      );
      return most;
    };
    const first = await remote.jobs.submit({ queue, tasks: range(4) });
    expect(await leaseThrough(4)).toBe(2);
    expect(await within(first.done(), 20_000)).toMatchObject({ status: "succeeded", done: 4 });

    await env.server.restartEmpty();
    const next = await remote.jobs.submit({ queue, tasks: range(6) });
    const most = await leaseThrough(6);
    expect(await within(next.done(), 20_000)).toMatchObject({ status: "succeeded", done: 6 });
    expect({ most, stored: await storedRecord(env.server, queue) }).toEqual({
      most: 2,
      stored: { operation: "PUT", maxConcurrency: 2 },
    });
  }, 120_000);

  it("a record the user deleted is not written back: the queue runs open", async () => {
    const queue = "gpu_deleted";
    const d = await env.runtimes.runtime("d");
    await d.queues.configure(queue, { maxConcurrency: 2 });
    const { handler, running, runThrough } = heldLedger();
    const worker = d.workers.start<number, number>({ queue, concurrency: 6, handler });
    await waitUntil(() => worker.stats().queueState === "limited", {
      timeoutMs: 10_000,
      message: "the worker limited",
    });
    const nc = await connect({ servers: env.server.url, name: "raw-kv" });
    try {
      await (await new Kvm(nc).open(names.queuesBucket)).delete(queue);
    } finally {
      await nc.close();
    }
    const tasks = range(6);
    const job = await d.jobs.submit({ queue, tasks, ackWaitMs: 20_000 });
    // All six at once: no limit left.
    await runThrough(tasks, 6, 30_000);
    expect(await within(job.done(), 20_000)).toMatchObject({ status: "succeeded", done: 6 });
    expect(running.size).toBe(0);
    await worker.stop();
    expect(await storedRecord(env.server, queue)).toEqual({ operation: "DEL" });
    // A write-back that comes after the deletion (its runtime heard the record vanish before)
    // loses to the marker: `kv.create` would have written over it.
    const own = await reconnectingBroker(env.server.url, "restorer", silentLogger());
    try {
      expect(await own.broker.queueControls.restoreSettings(queue, '{"v":1}')).toBe(false);
    } finally {
      await own.close();
    }
    expect(await storedRecord(env.server, queue)).toEqual({ operation: "DEL" });
  }, 60_000);
});
