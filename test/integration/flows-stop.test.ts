/**
 * A runtime stopping in the middle of a flow leaves the flow to another
 * runtime; it never fails a node for it. The step that would submit the
 * parent is interrupted once, then the runtime stops its jobs and a step
 * runs in the window before its core stops (what its record watch or its
 * sweep does then). Another runtime then finishes the flow. Oracles: the
 * flow record read from the memory server, and the handlers' ledger.
 */
import { expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { partsOf } from "../../src/api/runtime.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { waitUntil } from "../harness/wait.ts";

it("a step during rt.stop() fails no node; another runtime finishes the flow, each task run once", async () => {
  const server = createMemoryServer();
  const runtime = (name: string, roles: ("submitter" | "supervisor" | "worker")[]) =>
    createTestRuntime({ name, roles, broker: createMemoryBroker({ server }) });
  const a = await runtime("a", ["submitter", "supervisor"]);
  const w = await runtime("w", ["worker"]);
  const ran: string[] = [];
  w.workers.start({
    queue: "q",
    concurrency: 2,
    handler: async (task) => {
      ran.push(String(task.payload));
      return 1;
    },
  });
  const driver = partsOf(a).flows.driver;
  let interrupted = 0;
  driver.hook = (point, _flow, node) => {
    if (point === "submit" && node === "parent") {
      interrupted++;
      throw new Error("interrupted");
    }
  };
  await a.flows.submit({
    id: "f1",
    parent: { queue: "q", tasks: ["parent"] },
    children: [{ queue: "q", tasks: ["child"] }],
  });
  // The child ran, and the step that would submit the parent then was interrupted.
  await waitUntil(() => interrupted >= 1, { timeoutMs: 10_000, message: "the parent's submit interrupted" });
  expect(ran).toEqual(["child"]);
  driver.hook = undefined;
  // rt.stop()'s order: the flows, then the jobs, then the core; a step in between.
  await partsOf(a).flows.stop();
  await partsOf(a).jobs.stop();
  await driver.wake("f1");
  const stored = () => {
    const entry = memoryServerState(server)
      .flows.live()
      .find((e) => e.key === "f1");
    return JSON.parse(entry?.value ?? "{}") as { status: string; nodes: Record<string, { status: string }> };
  };
  expect(stored().nodes.parent?.status).not.toBe("failed");
  await a.stop();

  const b = await runtime("b", ["submitter", "supervisor"]);
  const flow = await b.flows.get("f1");
  expect((await flow?.done())?.status).toBe("succeeded");
  expect(stored().nodes.parent?.status).toBe("succeeded");
  expect(ran.sort()).toEqual(["child", "parent"]);
  await b.stop();
  await w.stop();
}, 30_000);
