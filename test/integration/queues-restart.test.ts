/**
 * Queue controls survive a restart of the server (SIGKILL, same store) and
 * of the runtimes: the pause and the concurrency pool are stored (file
 * storage), a worker that lived through the restart watches again, and a
 * runtime started afterwards reads them. Oracles: the raw KV entry read by
 * the test's own client after the restart, and the handlers' ledger (each
 * start and each end). The barrier that says the workers had their chance to
 * run the paused job's tasks: a job of an open queue, submitted after it,
 * handled by each of the two runtimes.
 */
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { maxOverlap } from "../harness/intervals.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsPool, type RuntimePool } from "../harness/runtime-pools.ts";
import { delay } from "../harness/wait.ts";

describe("queue controls across a server restart (NATS)", () => {
  let server: NatsServerHandle;
  let runtimes: RuntimePool;
  const runtime = (name: string) => runtimes.runtime(name);
  beforeAll(async () => {
    server = await startNatsServer();
    runtimes = natsPool(server.url);
  });
  afterAll(async () => {
    await runtimes?.stop();
    await server?.dispose();
  });

  it("a paused, capped queue is still paused and capped after the server and the runtimes restart", async () => {
    const before = await runtime("admin-before");
    await before.admin.provision(["rq"]);
    await before.queues.configure("rq", { maxConcurrency: 2 });
    await before.queues.pause("rq");
    const intervals: Array<{ start: number; end: number }> = [];
    let started = 0;
    const handler = async () => {
      started++;
      const start = Date.now();
      await delay(50);
      intervals.push({ start, end: Date.now() });
      return "ok";
    };
    // A worker that lives through the restart (the handler's work, 50 ms, lets runs overlap); each worker runtime also works an open queue of its own.
    const survivor = await runtime("worker-survivor");
    survivor.workers.start({ queue: "rq", concurrency: 4, handler });
    survivor.workers.start({ queue: "open_survivor", handler: () => "ok" });
    await before.stop();

    await server.kill();
    await server.restart();

    const raw = await connect({ servers: server.url });
    try {
      const entry = await (await new Kvm(raw).open("jetstate_queues")).get("rq");
      expect(entry?.json()).toMatchObject({ v: 1, paused: true, maxConcurrency: 2 });
    } finally {
      await raw.close();
    }
    const admin = await runtime("admin-after");
    const fresh = await runtime("worker-fresh");
    fresh.workers.start({ queue: "rq", concurrency: 4, handler });
    fresh.workers.start({ queue: "open_fresh", handler: () => "ok" });
    expect(await admin.queues.get("rq")).toMatchObject({ paused: true, maxConcurrency: 2 });
    const job = await admin.jobs.submit({ queue: "rq", tasks: Array.from({ length: 16 }, (_, i) => i) });
    // Jobs submitted after it, on open queues, run on both runtimes: each has seen the paused job.
    for (const queue of ["open_survivor", "open_fresh"])
      expect(await (await admin.jobs.submit({ queue, tasks: [1] })).done()).toMatchObject({
        status: "succeeded",
      });
    expect(started, "tasks of the paused queue started").toBe(0);
    expect(intervals).toEqual([]);
    await admin.queues.resume("rq");
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 16 });
    // 8 slots across the two workers: the stored pool of 2 is the bound.
    expect(maxOverlap(intervals)).toBe(2);
  }, 40_000);
});
