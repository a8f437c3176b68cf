import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { partsOf, type Runtime } from "../../src/api/runtime.ts";
import { defineQueue, PermanentError } from "../../src/index.ts";
import { badSubmits } from "../harness/bad-submits.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { useNatsRuntime } from "../harness/runtime.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

const collect = async <R>(results: AsyncIterable<R>) => {
  const all: R[] = [];
  for await (const r of results) all.push(r);
  return all;
};

describe("jobs over JetStream", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  useNatsRuntime({ logger }, (started) => {
    ({ server, rt } = started);
  });

  it("1000 tasks, 4 workers: succeeded, every result exactly once, one connection", async () => {
    const handled = new Map<number, number>();
    const workers = range(4).map(() =>
      rt.workers.start<{ n: number }, number>({
        queue: "detect",
        concurrency: 8,
        handler: async (task) => {
          handled.set(task.index, (handled.get(task.index) ?? 0) + 1);
          return task.payload.n * 2;
        },
      }),
    );
    const job = await rt.jobs.submit({ queue: "detect", tasks: range(1000).map((n) => ({ n })) });
    const final = await job.done();
    expect(final).toMatchObject({ status: "succeeded", done: 1000, failed: 0, dead: 0, total: 1000 });
    const results = await collect(job.results());
    expect(results).toHaveLength(1000);
    expect(new Set(results.map((r) => r.index)).size).toBe(1000);
    expect(results.find((r) => r.index === 7)).toMatchObject({ ok: true, result: 14 });
    expect(await server.connectionCount()).toBe(1);
    await Promise.all(workers.map((w) => w.stop()));
    expect(handled.size).toBe(1000);
    // The record holds the versioned end state.
    const {
      jobs: [record],
    } = await rt.jobs.list({ queue: "detect" });
    expect(record).toMatchObject({ v: 1, status: "succeeded", counts: { done: 1000, failed: 0, dead: 0 } });
  });

  it("a worker that died after storing a result but before its ack: redelivered, counted once", async () => {
    const job = await rt.jobs.submit({
      queue: "crashy",
      tasks: range(5).map((n) => ({ n })),
      ackWaitMs: 500,
    });
    // A "worker" that takes one task, stores its result like a worker does, and dies before acking.
    const nc = await connect({ servers: server.url });
    const js = jetstream(nc);
    const consumer = await js.consumers.get("jetstate_tasks_crashy", job.id);
    const msg = await consumer.next({ expires: 5000 });
    expect(msg).not.toBeNull();
    const { i } = msg!.json<{ i: number }>();
    await js.publish(
      `jetstate.results.crashy.${job.id}`,
      JSON.stringify([{ i, ok: true, r: "from the dead worker" }]),
      {
        msgID: "dead-worker.0",
      },
    );
    await nc.close(); // no ack
    await waitUntil(() => job.snapshot().done === 1, { timeoutMs: 5000, message: "first result counted" });
    const seen: number[] = [];
    const worker = rt.workers.start<{ n: number }, string>({
      queue: "crashy",
      concurrency: 8,
      // Hold the other tasks until the redelivery arrives, so the job cannot end before it.
      handler: async (task) => {
        seen.push(task.index);
        await waitUntil(() => seen.includes(i), {
          timeoutMs: 10_000,
          message: "redelivery of the dead worker's task",
        });
        return "ok";
      },
    });
    const final = await job.done();
    await worker.stop();
    expect(final).toMatchObject({ status: "succeeded", done: 5, total: 5 });
    expect(seen.filter((n) => n === i)).toEqual([i]); // the redelivery did reach a worker
    const results = await collect(job.results());
    expect(results).toHaveLength(5);
    expect(results.find((r) => r.index === i)).toMatchObject({ ok: true, result: "from the dead worker" });
  });

  it("a worker that stops responding: its task goes to another worker after the lease", async () => {
    const job = await rt.jobs.submit({ queue: "hang", tasks: range(10).map((n) => ({ n })), ackWaitMs: 600 });
    let hung = -1;
    const stuck = rt.workers.start<{ n: number }, string>({
      queue: "hang",
      concurrency: 1,
      stopTimeoutMs: 100,
      // The worker extends a running handler's lease by itself; past this it gives up on it.
      maxTaskMs: 300,
      handler: (task, ctx) => {
        hung = task.index;
        return new Promise((_, reject) =>
          ctx.signal.addEventListener("abort", () => reject(new Error("aborted"))),
        );
      },
    });
    await waitUntil(() => hung >= 0, { timeoutMs: 5000, message: "the stuck worker took a task" });
    const byHealthy: number[] = [];
    const healthy = rt.workers.start<{ n: number }, string>({
      queue: "hang",
      concurrency: 4,
      handler: (task) => {
        byHealthy.push(task.index);
        return `done ${task.index}`;
      },
    });
    const final = await job.done();
    expect(final).toMatchObject({ status: "succeeded", done: 10 });
    expect(byHealthy).toContain(hung);
    await Promise.all([stuck.stop(), healthy.stop()]);
  });

  it("permanent errors fail at once, transient ones are retried, within the failure tolerance", async () => {
    const attempts = new Map<number, number>();
    const worker = rt.workers.start<{ n: number }, number>({
      queue: "mixed",
      concurrency: 4,
      handler: (task) => {
        attempts.set(task.index, task.attempt);
        if (task.index === 3) throw new PermanentError("image not found");
        if (task.index === 5 && task.attempt < 3) throw new Error("upstream busy");
        return task.index;
      },
    });
    const job = await rt.jobs.submit({
      queue: "mixed",
      tasks: range(10).map((n) => ({ n })),
      maxFailures: 0.1,
      backoff: [20],
      maxDeliver: 5,
    });
    const final = await job.done();
    await worker.stop();
    expect(final).toMatchObject({ status: "succeeded", done: 9, failed: 1, dead: 0 });
    expect(attempts.get(3)).toBe(1); // never redelivered
    expect(attempts.get(5)).toBe(3);
    const failed = (await collect(job.results())).filter((r) => !r.ok);
    expect(failed).toMatchObject([{ index: 3, ok: false, error: "image not found", dead: false }]);
  });

  it("a job beyond its failure tolerance fails with a reason", async () => {
    const worker = rt.workers.start<number, number>({
      queue: "bad",
      handler: (task) => {
        if (task.index < 2) throw new PermanentError("broken");
        return 1;
      },
    });
    const job = await rt.jobs.submit({ queue: "bad", tasks: range(4), maxFailures: 0.25 });
    const final = await job.done();
    await worker.stop();
    expect(final.status).toBe("failed");
    expect(final.reason).toMatch(/2 of 4 tasks failed/);
  });

  it("cancel mid-run: failed with the reason, remaining tasks purged, consumer deleted, handlers aborted", async () => {
    let aborted = 0;
    let started = 0;
    const worker = rt.workers.start<number, number>({
      queue: "cancel",
      concurrency: 2,
      handler: (_task, ctx) => {
        started++;
        return new Promise((_, reject) =>
          ctx.signal.addEventListener("abort", () => {
            aborted++;
            reject(new Error("aborted"));
          }),
        );
      },
    });
    const job = await rt.jobs.submit({ queue: "cancel", tasks: range(50) });
    await waitUntil(() => started === 2, { timeoutMs: 5000, message: "two tasks in flight" });
    const final = await job.cancel("user changed their mind");
    expect(final).toMatchObject({ status: "failed", reason: "cancelled: user changed their mind" });
    await waitUntil(() => aborted === 2, { timeoutMs: 5000, message: "in-flight handlers aborted" });
    const nc = await connect({ servers: server.url });
    const jsm = await jetstreamManager(nc);
    await expect(jsm.consumers.info("jetstate_tasks_cancel", job.id)).rejects.toThrow(/not found/);
    const stream = await jsm.streams.info("jetstate_tasks_cancel", {
      subjects_filter: `jetstate.tasks.cancel.${job.id}`,
    });
    expect(stream.state.subjects?.[`jetstate.tasks.cancel.${job.id}`] ?? 0).toBe(0);
    await nc.close();
    await worker.stop();
    expect((await rt.jobs.get(job.id))?.snapshot().status).toBe("failed");
  });

  it("two jobs on one queue both progress: a small job is not starved by a big one", async () => {
    const order: string[] = [];
    const big = await rt.jobs.submit({ queue: "share", tasks: range(400) });
    const small = await rt.jobs.submit({ queue: "share", tasks: range(20) });
    const worker = rt.workers.start<number, number>({
      queue: "share",
      concurrency: 2,
      handler: async (task) => {
        order.push(task.jobId);
        await new Promise((r) => setImmediate(r));
        return 0;
      },
    });
    const smallDone = await small.done();
    const bigAtThatMoment = big.snapshot().done;
    await big.done();
    await worker.stop();
    expect(smallDone.status).toBe("succeeded");
    // Round robin: the small job finished long before the big one.
    expect(bigAtThatMoment).toBeLessThan(200);
  });

  it("the same idempotency key gives the same job and no duplicate task", async () => {
    const a = await rt.jobs.submit({ queue: "idem", tasks: range(30), idempotencyKey: "upload-42" });
    const b = await rt.jobs.submit({ queue: "idem", tasks: range(30), idempotencyKey: "upload-42" });
    expect(b.id).toBe(a.id);
    const nc = await connect({ servers: server.url });
    const jsm = await jetstreamManager(nc);
    // The tasks the server stores for the queue (a lane job's on the lane's subject): one copy each.
    const info = await jsm.streams.info("jetstate_tasks_idem", { subjects_filter: "jetstate.tasks.idem.>" });
    expect(info.state.subjects).toEqual({ [`jetstate.tasks.idem.lane.${a.id}`]: 30 });
    await nc.close();
    const worker = rt.workers.start<number, number>({ queue: "idem", handler: (t) => t.payload });
    expect((await a.done()).done).toBe(30);
    await worker.stop();
  });

  it("a finished job is dropped by its runtime; its handle, get() and a resubmit of its key still answer", async () => {
    const request = { queue: "forgotten", tasks: range(5), idempotencyKey: "forgotten-1" };
    const worker = rt.workers.start<number, number>({ queue: "forgotten", handler: (t) => t.payload * 2 });
    const job = await rt.jobs.submit(request);
    const final = await job.done();
    await worker.stop();
    expect(final).toMatchObject({ status: "succeeded", done: 5 });
    // Not watched here any more: the registry let go of it once its end was recorded.
    const registry = partsOf(rt).jobs;
    await waitUntil(() => registry.watchedSnapshot(job.id) === undefined, {
      timeoutMs: 5000,
      message: "job dropped",
    });
    // The handle a user holds still answers, from its own (ended) actor and the results stream.
    expect(job.snapshot()).toMatchObject({ status: "succeeded", done: 5 });
    expect(await job.done()).toEqual(final);
    const results = await collect(job.results());
    expect(results.map((r) => r.ok && r.result).sort((a, b) => Number(a) - Number(b))).toEqual([
      0, 2, 4, 6, 8,
    ]);
    // get() and a resubmit with the key answer from the record, and are not kept either.
    const got = await rt.jobs.get(job.id);
    expect(got?.snapshot()).toMatchObject({ status: "succeeded", done: 5, failed: 0, dead: 0 });
    expect(await got?.done()).toMatchObject({ status: "succeeded", done: 5 });
    const again = await rt.jobs.submit(request);
    expect(again.id).toBe(job.id);
    expect(await again.done()).toMatchObject({ status: "succeeded", done: 5 });
    expect(registry.watchedSnapshot(job.id)).toBeUndefined();
  });

  it("list() pages through jobs with a cursor, filtered by queue and status, and leaves no consumer behind", async () => {
    const nc = await connect({ servers: server.url });
    const jsm = await jetstreamManager(nc);
    // The runtime's own record watch is a consumer of the bucket's stream: listing adds none.
    const consumers = async () =>
      (await jsm.consumers.list("KV_jetstate_jobs").next()).map((c) => c.name).sort();
    const submitted = await Promise.all(range(5).map(() => rt.jobs.submit({ queue: "paged", tasks: [1] })));
    const before = await consumers();
    const cancelled = submitted.slice(0, 2);
    for (const job of cancelled) await job.cancel("paging test");
    const walk = async (query: { queue?: string; status?: "failed" }, limit: number) => {
      const ids: string[] = [];
      let cursor: string | undefined;
      for (let pages = 1; ; pages++) {
        const page = await rt.jobs.list({ ...query, limit, ...(cursor === undefined ? {} : { cursor }) });
        expect(page.jobs.length).toBeLessThanOrEqual(limit);
        ids.push(...page.jobs.map((j) => j.id));
        if (page.next === undefined) return { ids, pages };
        expect(page.next).toMatch(/^[A-Za-z0-9_-]+$/);
        expect(pages, "the walk ends").toBeLessThan(50);
        cursor = page.next;
      }
    };
    // The oracle: the ids submit() returned. Records are rewritten as jobs end: each is listed at
    // its last write, once here (nothing is written during the walk).
    const paged = await walk({ queue: "paged" }, 2);
    expect(paged.ids.sort()).toEqual(submitted.map((j) => j.id).sort());
    expect(paged.pages).toBeGreaterThanOrEqual(3);
    expect((await walk({ queue: "paged", status: "failed" }, 100)).ids.sort()).toEqual(
      cancelled.map((j) => j.id).sort(),
    );
    // Unfiltered, the other tests' jobs too, each once.
    const all = await walk({}, 3);
    expect(new Set(all.ids).size).toBe(all.ids.length);
    expect(all.ids).toEqual(expect.arrayContaining(submitted.map((j) => j.id)));
    expect(await consumers()).toEqual(before);
    await nc.close();
    for (const job of submitted.slice(2)) await job.cancel("test over");
  });

  it("a typed queue with a schema validates tasks at submit and results at the worker", async () => {
    const images = defineQueue<{ url: string }, { boxes: number }>("typed", {
      schema: {
        task: (v) => {
          const url = (v as { url?: unknown }).url;
          if (typeof url !== "string") throw new Error("url: expected a string");
          return { url };
        },
        result: (v) => {
          if (typeof (v as { boxes?: unknown }).boxes !== "number")
            throw new Error("boxes: expected a number");
          return v as { boxes: number };
        },
      },
    });
    await expect(
      rt.jobs.submit({ queue: images, tasks: [{ url: "a" }, { url: 3 as unknown as string }] }),
    ).rejects.toMatchObject({
      _tag: "InvalidArgument",
      field: "tasks[1]",
      message: /url: expected a string/,
    });
    const worker = rt.workers.start({
      queue: images,
      handler: (task) =>
        task.payload.url === "bad" ? ({ boxes: "many" } as unknown as { boxes: number }) : { boxes: 2 },
    });
    const job = await rt.jobs.submit({
      queue: images,
      tasks: [{ url: "a" }, { url: "bad" }],
      maxFailures: 0.5,
    });
    const final = await job.done();
    await worker.stop();
    expect(final).toMatchObject({ status: "succeeded", done: 1, failed: 1 });
    const results = await collect(job.results());
    const good = results.find((r) => r.ok);
    expect(good?.ok && good.result.boxes).toBe(2);
    expect(results.find((r) => !r.ok)).toMatchObject({ error: /result of task 1.*boxes: expected a number/ });
  });
});

describe("bad submit input: a typed error and nothing written to NATS", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  useNatsRuntime({ logger }, (started) => {
    ({ server, rt } = started);
  });

  it.each(badSubmits)("%s", async (_name, request, field) => {
    await expect(rt.jobs.submit(request as never)).rejects.toMatchObject({ _tag: "InvalidArgument", field });
  });

  it("left no record, stream message or consumer behind", async () => {
    expect((await rt.jobs.list()).jobs).toEqual([]);
    const nc = await connect({ servers: server.url });
    const jsm = await jetstreamManager(nc);
    // Every queue's tasks stream there is (a refused submit sets none up) holds nothing.
    for await (const name of jsm.streams.names()) {
      if (!name.startsWith("jetstate_tasks_")) continue;
      const info = await jsm.streams.info(name);
      expect(info.state.messages).toBe(0);
      expect(info.state.consumer_count).toBe(0);
    }
    await nc.close();
  });

  it("rejects a bad worker configuration", () => {
    expect(() => rt.workers.start({ queue: "a.b", handler: () => 1 })).toThrow(/queue/);
    expect(() => rt.workers.start({ queue: "q", concurrency: 0, handler: () => 1 })).toThrow(/concurrency/);
  });

  void AckPolicy;
});
