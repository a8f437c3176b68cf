/**
 * A flow across a restart of the nats-server and of every runtime: the flow
 * record and its jobs are on disk, nothing of the flow is in a runtime's
 * memory. A parent + 2 children flow is submitted; one child's queue is
 * served, the other's is not; the server is SIGKILLed and started again on
 * the same store, the runtimes are replaced by new ones, and only then is
 * the second queue served. Oracle: the handlers' ledger (each task once,
 * the parent after both children) and the flow record read raw.
 */
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

let nats: NatsServerHandle;
beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.dispose();
});

const rawFlow = async (id: string) => {
  const nc = await connect({ servers: nats.url });
  try {
    return (await (await new Kvm(nc).open("jetstate_flows")).get(id))?.json<{
      status: string;
      nodes: Record<string, { status: string }>;
    }>();
  } finally {
    await nc.close();
  }
};

describe("a flow across a server restart and new runtimes", () => {
  it("finishes, each task once, the parent after both children", { timeout: 30_000 }, async () => {
    const ledger: Array<{ queue: string; jobId: string; index: number; at: number }> = [];
    const serve = (rt: Runtime, queue: string) =>
      rt.workers.start({
        queue,
        handler: (task) => {
          ledger.push({ queue, jobId: task.jobId, index: task.index, at: Date.now() });
          return task.index;
        },
      });
    const open = () => createRuntime({ servers: nats.url, logger: silentLogger(), jobs: { leaseMs: 1000 } });
    const first = await open();
    serve(first, "early");
    const flow = await first.flows.submit({
      id: "across",
      parent: { queue: "early", tasks: [{}] },
      children: [
        { queue: "early", tasks: [1, 2] },
        { queue: "late", tasks: [3] },
      ],
    });
    await waitUntil(async () => (await rawFlow("across"))?.nodes.child0?.status === "succeeded", {
      timeoutMs: 10_000,
      message: "the first child ended",
    });
    expect(flow.snapshot().status).toBe("running");
    await nats.kill();
    await first.stop();
    await nats.restart();
    const second = await open();
    try {
      serve(second, "early");
      serve(second, "late");
      // Nobody asks for the flow: the new runtime's driver finds it (its sweep).
      await waitUntil(async () => (await rawFlow("across"))?.status === "succeeded", {
        timeoutMs: 20_000,
        intervalMs: 200,
        message: "the flow's record says succeeded",
      });
      const end = await (await second.flows.get("across"))?.done();
      expect(end?.status).toBe("succeeded");
      const ids = Object.values(end?.nodes ?? {}).map((n) => n.jobId);
      expect(ledger.map((e) => `${ids.indexOf(e.jobId)}.${e.index}`).sort()).toEqual([
        "0.0",
        "0.1",
        "1.0",
        "2.0",
      ]);
      const parent = ledger.find((e) => e.jobId === end?.nodes.parent?.jobId);
      expect(parent?.at).toBeGreaterThanOrEqual(
        Math.max(...ledger.filter((e) => e !== parent).map((e) => e.at)),
      );
    } finally {
      await second.stop();
    }
  });
});
