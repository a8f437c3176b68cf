/**
 * The job-record watch a runtime runs for its job actors and its workers
 * (`watchRecordChanges`, one per runtime: api/record-feed.ts) is a consumer
 * on the records bucket's stream. A runtime that stops must take it away: a
 * consumer left behind stays on the server until it expires, one per
 * runtime that ever started (seen in test/integration/jobs-five-processes.test.ts:
 * every cleanly stopped process left its watch). The oracle is the server's
 * consumer list, read with a manager of the test's own.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Role } from "../../src/api/permissions.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { encodeRecord } from "../../src/kernel/job-record-codec.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { finishedRecord } from "../harness/finished-records.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const recordsStream = "KV_jetstate_jobs";

describe("the job-record watch on NATS", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url, name: "record-watch-test" });
  });
  afterAll(async () => {
    await nc?.close();
    await server?.dispose();
  });

  const consumers = async () => {
    const jsm = await jetstreamManager(nc);
    const names: string[] = [];
    try {
      for await (const c of jsm.consumers.list(recordsStream)) names.push(c.name);
    } catch (error) {
      if ((error as { code?: number }).code === 10059) return names;
      throw error;
    }
    return names;
  };

  /**
   * 2,000 jobs that ended long ago, written raw: a watch that started with every record would
   * have them delivered. The oracle is the server's own count of what its consumer delivered.
   */
  const keepRecords = async (tag: string) => {
    const kv = await new Kvm(nc).create("jetstate_jobs", { history: 1 });
    const at = Date.now();
    for (let from = 0; from < 2000; from += 500)
      await Promise.all(
        Array.from({ length: 500 }, (_, k) => {
          const r = finishedRecord(from + k, at, tag);
          return kv.put(r.id, encodeRecord(r));
        }),
      );
  };

  it.each<{ roles: Role[]; watches: number }>([
    { roles: ["submitter"], watches: 1 },
    { roles: ["supervisor"], watches: 1 },
    { roles: ["worker"], watches: 1 },
    // One watch, its job actors' and its worker's.
    { roles: ["submitter", "supervisor", "worker", "admin"], watches: 1 },
  ])(
    "a runtime with roles $roles takes its watch consumers away when it stops",
    async ({ roles, watches }) => {
      const before = await consumers();
      const rt = await createRuntime({
        servers: server.url,
        logger: silentLogger(),
        roles,
        jobs: { cleanupIntervalMs: 0 },
      });
      const worker = roles.includes("worker")
        ? rt.workers.start({ queue: "watched", handler: () => 1 })
        : undefined;
      // Its watches are up: the server lists them (the runtime's loops start them at once).
      await waitUntil(async () => (await consumers()).length >= before.length + watches, {
        timeoutMs: 10_000,
        message: `${watches} watch consumers on ${recordsStream}`,
      });
      await worker?.stop();
      await rt.stop();
      expect(await consumers()).toEqual(before);
    },
  );

  it("a runtime that runs job actors does not read the records kept when it starts, and still hears of changes", async () => {
    await keepRecords("kept");
    const before = new Set(await consumers());
    const rt = await createRuntime({
      servers: server.url,
      logger: silentLogger(),
      roles: ["submitter", "supervisor"],
      jobs: { cleanupIntervalMs: 0 },
    });
    const jsm = await jetstreamManager(nc);
    let watch = "";
    await waitUntil(
      async () => {
        watch = (await consumers()).find((name) => !before.has(name)) ?? "";
        return watch !== "";
      },
      { timeoutMs: 10_000, message: "the runtime's watch consumer" },
    );
    // A job cancelled by another runtime still reaches this runtime's actor through the watch.
    const job = await rt.jobs.submit({ queue: "watched-start", tasks: [1] });
    const other = await createRuntime({ servers: server.url, logger: silentLogger(), roles: ["submitter"] });
    await (await other.jobs.get(job.id))?.cancel("from elsewhere");
    await expect(job.done()).resolves.toMatchObject({
      status: "failed",
      reason: "cancelled: from elsewhere",
    });
    const info = await jsm.consumers.info(recordsStream, watch);
    // What it delivered: this job's few writes, not the 2,000 records kept.
    expect(info.delivered.consumer_seq).toBeLessThan(20);
    await other.stop();
    await rt.stop();
  });

  it("a worker does not read the records kept when it starts; it finds the jobs already there by their consumers", async () => {
    await keepRecords("kept-w");
    const queue = "worker-start";
    const submitting = {
      servers: server.url,
      logger: silentLogger(),
      roles: ["submitter", "supervisor"] as Role[],
    };
    const submitter = await createRuntime(submitting);
    const laneSubmitter = await createRuntime({ ...submitting, jobs: { lane: true } });
    // Before the worker: a job with a consumer of its own, and a lane job.
    const own = await submitter.jobs.submit({ queue, tasks: [1, 2, 3] });
    const laned = await laneSubmitter.jobs.submit({ queue, tasks: [4] });
    const before = new Set(await consumers());
    const rt = await createRuntime({ servers: server.url, logger: silentLogger(), roles: ["worker"] });
    rt.workers.start<number, number>({ queue, handler: (task) => task.payload * 10 });
    await expect(own.done()).resolves.toMatchObject({ status: "succeeded", done: 3 });
    await expect(laned.done()).resolves.toMatchObject({ status: "succeeded", done: 1 });
    // The worker's answers, each task's payload × 10: run by it, not by anyone else.
    const values: unknown[] = [];
    for await (const r of own.results()) if (r.ok) values.push(r.result);
    expect(values.sort()).toEqual([10, 20, 30]);
    // And one after it: the watch tells the worker.
    const after = await submitter.jobs.submit({ queue, tasks: [5, 6] });
    await expect(after.done()).resolves.toMatchObject({ status: "succeeded", done: 2 });
    // What its watch delivered (every consumer it has on the records' stream): these jobs' few
    // writes, not the records kept.
    const jsm = await jetstreamManager(nc);
    const watches = (await consumers()).filter((name) => !before.has(name));
    expect(watches.length).toBeGreaterThan(0);
    let delivered = 0;
    for (const name of watches)
      delivered += (await jsm.consumers.info(recordsStream, name)).delivered.consumer_seq;
    expect(delivered).toBeLessThan(30);
    await rt.stop();
    await Promise.all([submitter.stop(), laneSubmitter.stop()]);
  });
});
