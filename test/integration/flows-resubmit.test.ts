/**
 * Resubmitting a flow under its id (found by a review): the same flow
 * written in another order (its jobs, a request's fields, a job's
 * dependencies) or with a default spelt out is the same flow, as `rt.jobs`
 * treats the same job; another flow is refused. A flow stored by an older
 * version (its digest of the request as written) can still be resubmitted as
 * it was written. Oracles: the flows store read raw from the memory server,
 * and the handlers' ledger (each task runs once).
 */
import { createHash } from "node:crypto";
import { expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import type { FlowRequest } from "../../src/api/flows.ts";
import { IdempotencyConflict } from "../../src/kernel/errors.ts";
import type { FlowRecord } from "../../src/kernel/flow-record.ts";
import {
  createMemoryBroker,
  createMemoryServer,
  createTestRuntime,
  type MemoryServer,
} from "../../src/testing.ts";
import { waitUntil } from "../harness/wait.ts";

/** The flows stored (not their live marks), read raw. */
const storedFlows = (server: MemoryServer): FlowRecord[] =>
  memoryServerState(server)
    .flows.live()
    .filter((e) => !e.key.startsWith("live."))
    .map((e) => JSON.parse(e.value as string) as FlowRecord);

const original: FlowRequest = {
  id: "f1",
  jobs: {
    x: { queue: "q", tasks: ["x"] },
    y: { queue: "q", tasks: ["y"] },
    z: { queue: "q", tasks: ["z"], dependsOn: ["x", "y"] },
  },
};

/** The same flow, written otherwise. */
const sameFlows: Array<[string, FlowRequest]> = [
  [
    "jobs listed in another order",
    {
      id: "f1",
      jobs: {
        z: { queue: "q", tasks: ["z"], dependsOn: ["x", "y"] },
        y: { queue: "q", tasks: ["y"] },
        x: { queue: "q", tasks: ["x"] },
      },
    },
  ],
  [
    "a request's fields in another order",
    {
      id: "f1",
      jobs: {
        x: { tasks: ["x"], queue: "q" },
        y: { queue: "q", tasks: ["y"] },
        z: { dependsOn: ["x", "y"], tasks: ["z"], queue: "q" },
      },
    },
  ],
  [
    "a default spelt out",
    {
      id: "f1",
      jobs: {
        x: { queue: "q", tasks: ["x"], maxFailures: 0 },
        y: { queue: "q", tasks: ["y"], maxDeliver: 5 },
        z: { queue: "q", tasks: ["z"], dependsOn: ["x", "y"] },
      },
      policy: { onChildFailure: "fail" },
    },
  ],
  [
    "dependencies in another order",
    {
      id: "f1",
      jobs: {
        x: { queue: "q", tasks: ["x"] },
        y: { queue: "q", tasks: ["y"] },
        z: { queue: "q", tasks: ["z"], dependsOn: ["y", "x"] },
      },
    },
  ],
];

/** Other flows under the same id. */
const otherFlows: Array<[string, FlowRequest]> = [
  [
    "another task",
    {
      id: "f1",
      jobs: {
        x: { queue: "q", tasks: ["x2"] },
        y: { queue: "q", tasks: ["y"] },
        z: { queue: "q", tasks: ["z"], dependsOn: ["x", "y"] },
      },
    },
  ],
  [
    "another setting",
    {
      id: "f1",
      jobs: {
        x: { queue: "q", tasks: ["x"], maxFailures: 1 },
        y: { queue: "q", tasks: ["y"] },
        z: { queue: "q", tasks: ["z"], dependsOn: ["x", "y"] },
      },
    },
  ],
  [
    "another dependency",
    {
      id: "f1",
      jobs: {
        x: { queue: "q", tasks: ["x"] },
        y: { queue: "q", tasks: ["y"] },
        z: { queue: "q", tasks: ["z"], dependsOn: ["x"] },
      },
    },
  ],
  [
    "another queue",
    {
      id: "f1",
      jobs: {
        x: { queue: "q2", tasks: ["x"] },
        y: { queue: "q", tasks: ["y"] },
        z: { queue: "q", tasks: ["z"], dependsOn: ["x", "y"] },
      },
    },
  ],
  ["another policy", { ...original, policy: { onChildFailure: "continue" } }],
];

const setUp = async () => {
  const server = createMemoryServer();
  const rt = await createTestRuntime({
    name: "rt",
    roles: ["submitter", "supervisor", "worker"],
    broker: createMemoryBroker({ server }),
  });
  const ran: string[] = [];
  let release = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  rt.workers.start({
    queue: "q",
    concurrency: 4,
    handler: async (task) => {
      ran.push(String(task.payload));
      await released;
      return 1;
    },
  });
  return { server, rt, ran, release };
};

it("the same flow written otherwise is the same flow; another one under its id is refused", async () => {
  const { server, rt, ran, release } = await setUp();
  const flow = await rt.flows.submit(original);
  const stored = storedFlows(server);
  expect(stored.map((f) => f.id)).toEqual(["f1"]);
  for (const [what, request] of sameFlows) {
    const again = await rt.flows.submit(request).catch((error: unknown) => error);
    expect(again, what).not.toBeInstanceOf(Error);
    expect((again as { id: string }).id, what).toBe("f1");
  }
  for (const [what, request] of otherFlows)
    await expect(rt.flows.submit(request), what).rejects.toBeInstanceOf(IdempotencyConflict);
  // One flow stored, its digest as first written.
  expect(storedFlows(server).map((f) => [f.id, f.digest])).toEqual([["f1", stored[0]?.digest]]);
  release();
  expect((await flow.done()).status).toBe("succeeded");
  await waitUntil(() => storedFlows(server)[0]?.status === "succeeded", {
    timeoutMs: 10_000,
    message: "the flow never succeeded",
  });
  expect(ran.sort()).toEqual(["x", "y", "z"]);
  await rt.stop();
}, 20_000);

it("a flow stored with the digest of an older version is resubmitted as it was written", async () => {
  const { server, rt, ran, release } = await setUp();
  await rt.flows.submit(original);
  // The digest an older version stored: the requests and dependencies as the user wrote them.
  const broker = createMemoryBroker({ server });
  const found = await broker.flows.getFlow("f1");
  if (!found) throw new Error("flow f1 not stored");
  const olderDigest = `v1:${createHash("sha256")
    .update(
      JSON.stringify({
        onChildFailure: found.record.onChildFailure,
        nodes: Object.entries(found.record.nodes).map(([name, node]) => [name, node.request, node.dependsOn]),
      }),
    )
    .digest("base64url")}`;
  await broker.flows.updateFlow({ ...found.record, digest: olderDigest }, found.revision);
  expect(storedFlows(server)[0]?.digest).toBe(olderDigest);

  // A second runtime: nothing of the first flow's handle cached.
  const other = await createTestRuntime({
    name: "other",
    roles: ["submitter"],
    broker: createMemoryBroker({ server }),
  });
  const again = await other.flows.submit(original);
  expect(again.id).toBe("f1");
  await expect(other.flows.submit(otherFlows[0]?.[1] as FlowRequest)).rejects.toBeInstanceOf(
    IdempotencyConflict,
  );
  expect(storedFlows(server).map((f) => [f.id, f.digest])).toEqual([["f1", olderDigest]]);
  release();
  await waitUntil(() => storedFlows(server)[0]?.status === "succeeded", {
    timeoutMs: 10_000,
    message: "the flow never succeeded",
  });
  expect(ran.sort()).toEqual(["x", "y", "z"]);
  await other.stop();
  await rt.stop();
}, 20_000);
