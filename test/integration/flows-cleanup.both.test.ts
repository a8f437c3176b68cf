/**
 * Cleanup removes the flows that settled past retention, and keeps the
 * jobs of a flow that has not: a node's job removed before its flow's
 * driver saw its end read as never submitted, and the driver submitted it
 * again (its tasks ran twice). Both brokers. The oracles are raw readings of
 * the stores (a nats.js connection of the test's own on the server's
 * streams; the memory server's buckets), never the runtime's answers, and a
 * ledger of what the handlers ran.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { createMemoryServer } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { memoryPool, natsPool, type RuntimePool } from "../harness/runtime-pools.ts";
import { waitUntil } from "../harness/wait.ts";

interface Stored {
  /** Keys of the flows bucket that have any message (a value or a delete marker). */
  flowKeys(): Promise<string[]>;
  /** Keys of the jobs bucket that hold a record. */
  jobKeys(): Promise<string[]>;
}

const memoryBackend = (): RuntimePool & Stored => {
  const server = createMemoryServer();
  const state = memoryServerState(server);
  return {
    ...memoryPool({ jobs: { cleanupIntervalMs: 0 } }, server),
    flowKeys: async () => state.flows.live().map((e) => e.key),
    jobKeys: async () => state.records.live().map((e) => e.key),
  };
};

const natsBackend = (nats: NatsServerHandle, prefix: string): RuntimePool & Stored => {
  /** The subjects a bucket's stream holds a message on, as the server counts them. */
  const keys = async (bucket: string): Promise<string[]> => {
    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: `$KV.${bucket}.>` });
      return Object.keys(info.state.subjects ?? {}).map((s) => s.slice(`$KV.${bucket}.`.length));
    } finally {
      await nc.close();
    }
  };
  return {
    ...natsPool(nats.url, { prefix, jobs: { cleanupIntervalMs: 0 } }),
    flowKeys: () => keys(`${prefix}_flows`),
    jobKeys: () => keys(`${prefix}_jobs`),
  };
};

let nats: NatsServerHandle;
beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.dispose();
});

describe.each([
  { name: "memory", make: memoryBackend },
  { name: "nats", make: () => natsBackend(nats, "flc") },
])("flows cleanup ($name)", ({ make }) => {
  it("removes a settled flow past retention, nothing of it left; keeps an open flow and its ended node's job; that node runs once", async () => {
    const backend = make();
    try {
      const rt: Runtime = await backend.runtime("all-roles");
      const ran: string[] = [];
      let open!: () => void;
      const gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      rt.workers.start({
        queue: "count",
        handler: (task) => {
          ran.push(task.jobId);
          return task.payload;
        },
      });
      rt.workers.start({
        queue: "slow",
        handler: async (task) => {
          ran.push(task.jobId);
          await gate;
          return task.payload;
        },
      });
      const settled = await rt.flows.submit({
        parent: { queue: "count", tasks: [0] },
        children: [{ queue: "count", tasks: [1] }],
      });
      const settledEnd = await settled.done();
      expect(settledEnd.status).toBe("succeeded");
      const settledJobs = Object.values(settledEnd.nodes).map((n) => n.jobId);
      // a has ended, b runs until the gate opens, c waits for both.
      const running = await rt.flows.submit({
        jobs: {
          a: { queue: "count", tasks: [1] },
          b: { queue: "slow", tasks: [2] },
          c: { queue: "count", tasks: [3], dependsOn: ["a", "b"] },
        },
      });
      await waitUntil(() => running.snapshot().nodes.a?.status === "succeeded", {
        timeoutMs: 10_000,
        message: "node a stepped succeeded",
      });
      const a = running.snapshot().nodes.a?.jobId as string;
      expect(await backend.flowKeys()).toEqual(expect.arrayContaining([settled.id, running.id]));

      const dry = await rt.admin.cleanup({ retentionMs: 0, dryRun: true });
      expect(dry.flowsRemoved).toEqual([settled.id]);
      expect(await backend.flowKeys()).toContain(settled.id);

      const report = await rt.admin.cleanup({ retentionMs: 0 });
      expect(report.flowsRemoved).toEqual([settled.id]);
      // Not even a delete marker of it is left.
      expect(await backend.flowKeys()).not.toContain(settled.id);
      expect(await backend.flowKeys()).toContain(running.id);
      expect(await rt.flows.get(settled.id)).toBeUndefined();
      // The settled flow's jobs went past retention; the open flow's ended node stays.
      const jobKeys = await backend.jobKeys();
      for (const id of settledJobs) expect(jobKeys).not.toContain(id);
      expect(report.recordsRemoved).not.toContain(a);
      expect(jobKeys).toContain(a);

      open();
      const end = await running.done();
      expect(end.status).toBe("succeeded");
      expect(ran.filter((id) => id === a)).toHaveLength(1);
      // Settled now: the next pass removes it and its jobs.
      await waitUntil(async () => !(await backend.flowKeys()).includes(`live.${running.id}`), {
        timeoutMs: 10_000,
        message: "the settled flow unmarked",
      });
      expect((await rt.admin.cleanup({ retentionMs: 0 })).flowsRemoved).toEqual([running.id]);
      expect(await backend.jobKeys()).not.toContain(a);
    } finally {
      await backend.stop();
    }
  });
});
