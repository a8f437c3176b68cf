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
import { partsOf, type Runtime } from "../../src/api/runtime.ts";
import { createMemoryServer } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { memoryPool, natsPool, type RuntimePool } from "../harness/runtime-pools.ts";
import { waitUntil } from "../harness/wait.ts";

interface Stored {
  /** Keys of the flows bucket that have any message (a value or a delete marker). */
  flowKeys(): Promise<string[]>;
  /** Keys of the jobs bucket that hold a record. */
  jobKeys(): Promise<string[]>;
  /** Whether the flows bucket exists (the memory broker has no buckets to make: false). */
  flowsBucket(): Promise<boolean>;
}

const memoryBackend = (): RuntimePool & Stored => {
  const server = createMemoryServer();
  const state = memoryServerState(server);
  return {
    ...memoryPool({ jobs: { cleanupIntervalMs: 0 } }, server),
    flowKeys: async () => state.flows.live().map((e) => e.key),
    jobKeys: async () => state.records.live().map((e) => e.key),
    flowsBucket: async () => false,
  };
};

const natsBackend = (nats: NatsServerHandle, prefix: string): RuntimePool & Stored => {
  /** The subjects a bucket's stream holds a message on, as the server counts them. */
  const keys = async (bucket: string): Promise<string[]> => {
    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams
        .info(`KV_${bucket}`, { subjects_filter: `$KV.${bucket}.>` })
        .catch(() => undefined); // no bucket: nothing stored
      return Object.keys(info?.state.subjects ?? {}).map((s) => s.slice(`$KV.${bucket}.`.length));
    } finally {
      await nc.close();
    }
  };
  return {
    ...natsPool(nats.url, { prefix, jobs: { cleanupIntervalMs: 0 } }),
    flowKeys: () => keys(`${prefix}_flows`),
    jobKeys: () => keys(`${prefix}_jobs`),
    flowsBucket: async () => {
      const nc = await connect({ servers: nats.url });
      try {
        const jsm = await jetstreamManager(nc);
        return await jsm.streams.info(`KV_${prefix}_flows`).then(
          () => true,
          () => false,
        );
      } finally {
        await nc.close();
      }
    },
  };
};

let nats: NatsServerHandle;
beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.dispose();
});

let prefixes = 0;
describe.each([
  { name: "memory", make: memoryBackend },
  { name: "nats", make: () => natsBackend(nats, `flc${++prefixes}`) },
])("flows cleanup ($name)", ({ make }) => {
  it("removes a settled flow past retention, nothing of it left; keeps an open flow and the job of a node whose end its driver has not written; that node runs once", async () => {
    const backend = make();
    try {
      const rt: Runtime = await backend.runtime("all-roles");
      // The driver cannot write the flow record for a while (as one dying at each step would).
      let blocked = false;
      let refused = 0;
      partsOf(rt).flows.driver.hook = (point) => {
        if (!blocked || point !== "update") return;
        refused++;
        throw new Error("the driver cannot write now");
      };
      const ran: string[] = [];
      const gate = () => {
        let open!: () => void;
        const opened = new Promise<void>((resolve) => {
          open = resolve;
        });
        return { open, opened };
      };
      const [first, slow] = [gate(), gate()];
      const handler =
        (wait?: Promise<void>) =>
        async (task: { jobId: string; payload: unknown }): Promise<unknown> => {
          ran.push(task.jobId);
          await wait;
          return task.payload;
        };
      rt.workers.start({ queue: "count", handler: handler() });
      rt.workers.start({ queue: "first", handler: handler(first.opened) });
      rt.workers.start({ queue: "slow", handler: handler(slow.opened) });
      const settled = await rt.flows.submit({
        parent: { queue: "count", tasks: [0] },
        children: [{ queue: "count", tasks: [1] }],
      });
      const settledEnd = await settled.done();
      expect(settledEnd.status).toBe("succeeded");
      const settledJobs = Object.values(settledEnd.nodes).map((n) => n.jobId);
      // a ends while its driver cannot write it, b runs until its gate opens, c waits for both.
      const running = await rt.flows.submit({
        jobs: {
          a: { queue: "first", tasks: [1] },
          b: { queue: "slow", tasks: [2] },
          c: { queue: "count", tasks: [3], dependsOn: ["a", "b"] },
        },
      });
      await waitUntil(() => running.snapshot().nodes.b?.status === "running", {
        timeoutMs: 10_000,
        message: "a and b submitted",
      });
      const a = running.snapshot().nodes.a?.jobId as string;
      blocked = true;
      first.open();
      expect(await (await rt.jobs.get(a))?.done()).toMatchObject({ status: "succeeded" });
      await waitUntil(() => refused > 0, { timeoutMs: 10_000, message: "the driver tried to write a's end" });
      expect(running.snapshot().nodes.a?.status).toBe("running");
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

      // The driver steps again: a read as never submitted would run again.
      blocked = false;
      slow.open();
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

  it("a pass on a server where no flow was ever submitted removes none, and does not make the flows bucket", async () => {
    const backend = make();
    try {
      const rt = await backend.runtime("admin-only");
      const report = await rt.admin.cleanup({ retentionMs: 0 });
      expect(report.flowsRemoved).toEqual([]);
      expect(await backend.flowKeys()).toEqual([]);
      expect(await backend.flowsBucket()).toBe(false);
    } finally {
      await backend.stop();
    }
  });
});
