/**
 * The sweep that finishes flows whose driver died reads every flow marked
 * not settled. One flow record it cannot read (a newer version's, one
 * edited by hand), marked before the others, must not stop it: the flows
 * after it are still driven. Runtime A submits a flow and never submits its
 * job (its driver's hook throws there, as a driver dying would); runtime B
 * finds the flow by its sweep alone and drives it. Oracle: B's handler ledger.
 */
import { describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { partsOf } from "../../src/api/runtime.ts";
import { PermanentBrokerError } from "../../src/kernel/errors.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil } from "../harness/wait.ts";

describe("the flow sweep", () => {
  it("drives the flows marked after one whose record it cannot read", { timeout: 20_000 }, async () => {
    const server = createMemoryServer();
    const flows = memoryServerState(server).flows;
    flows.put("test", "unreadable", JSON.stringify({ v: 2, id: "unreadable" }));
    flows.put("test", "live.unreadable", JSON.stringify({ v: 1, at: Date.now() }));
    const a = await createTestRuntime({ name: "a", broker: createMemoryBroker({ server }) });
    partsOf(a).flows.driver.hook = (point) => {
      if (point === "submit") throw new Error("A died before submitting");
    };
    await a.flows.submit({ id: "f1", jobs: { only: { queue: "q", tasks: [7] } } });
    await a.stop();
    const handled: number[] = [];
    const b = await createTestRuntime({ name: "b", broker: createMemoryBroker({ server }) });
    try {
      b.workers.start<number, number>({ queue: "q", handler: (task) => handled.push(task.payload) });
      // Nothing here looks at the flow (a `get` would step it): only the sweep can find it.
      await waitUntil(() => handled.length > 0, { timeoutMs: 10_000, message: "B's sweep drives the flow" });
      expect(handled).toEqual([7]);
      expect(await (await b.flows.get("f1"))?.done()).toMatchObject({ status: "succeeded" });
    } finally {
      await b.stop();
    }
  });

  // One mark's write that fails (a mark left by a submitter that died, whose removal the server
  // refuses, or a step that throws) stopped the whole pass, logged at debug: the flows marked
  // after it were never driven while it failed.
  it("drives the flows marked after one whose mark it cannot remove", { timeout: 20_000 }, async () => {
    const server = createMemoryServer();
    const flows = memoryServerState(server).flows;
    // A mark with no flow record, long past the time a submit may take to write it.
    flows.put("test", "live.orphan", JSON.stringify({ v: 1, at: 0 }));
    const a = await createTestRuntime({ name: "a", broker: createMemoryBroker({ server }) });
    partsOf(a).flows.driver.hook = (point) => {
      if (point === "submit") throw new Error("A died before submitting");
    };
    await a.flows.submit({ id: "f2", jobs: { only: { queue: "q2", tasks: [8] } } });
    await a.stop();
    const refusing = spiedBroker(createMemoryBroker({ server }), (name, _n, args, call) =>
      name === "flows.unmarkLive" && args[0] === "orphan"
        ? Promise.reject(new PermanentBrokerError({ message: "refused", operation: "flows.unmarkLive" }))
        : call(),
    ).broker;
    const handled: number[] = [];
    const b = await createTestRuntime({ name: "b", broker: refusing });
    try {
      b.workers.start<number, number>({ queue: "q2", handler: (task) => handled.push(task.payload) });
      await waitUntil(() => handled.length > 0, { timeoutMs: 10_000, message: "B's sweep drives the flow" });
      expect(handled).toEqual([8]);
    } finally {
      await b.stop();
    }
  });
});
