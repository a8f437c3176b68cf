/**
 * Queue controls survive a restart of the server (SIGKILL, same store) and
 * of the runtimes: the pause and the concurrency pool are stored (file
 * storage), a worker that lived through the restart watches again, and a
 * runtime started afterwards reads them. Oracles: the raw KV entry read by
 * the test's own client after the restart, and the handlers' ledger.
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
    const handler = async () => {
      const start = Date.now();
      await delay(50);
      intervals.push({ start, end: Date.now() });
      return "ok";
    };
    // A worker that lives through the restart.
    const survivor = await runtime("worker-survivor");
    survivor.workers.start({ queue: "rq", concurrency: 4, handler });
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
    expect(await admin.queues.get("rq")).toMatchObject({ paused: true, maxConcurrency: 2 });
    const job = await admin.jobs.submit({ queue: "rq", tasks: Array.from({ length: 16 }, (_, i) => i) });
    await delay(1500);
    expect(intervals).toEqual([]);
    await admin.queues.resume("rq");
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 16 });
    // 8 slots across the two workers: the stored pool of 2 is the bound.
    expect(maxOverlap(intervals)).toBe(2);
  }, 40_000);
});
