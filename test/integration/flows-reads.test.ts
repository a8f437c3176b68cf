/**
 * What driving a flow costs in job record reads (a known limit, found by a
 * review): each step read the job of every node not ended, and every job
 * record change of a node woke a step on every runtime that drives flows, so
 * a flow of hundreds of children cost reads by the hundred thousand, growing
 * with the square of its size.
 *
 * Runtimes A and B both drive flows (submitter); W works, its handlers
 * answering at once. A submits a flow of N one-task children and a parent
 * that depends on all of them. The oracle is a counter of its own around A's
 * and B's brokers: every job record read (`getRecord`, and `tasksCommitted`,
 * which a lane job's read may add), whoever in the runtime makes it. A
 * linear driver reads a few records per child; the bound, 10 per child, is
 * well above that and far below N.
 */
import { describe, expect, it } from "vitest";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";

/** Job record reads per child the two driving runtimes may make, together, over the flow's life. */
const readsPerChild = 10;

const recordReads = new Set(["getRecord", "tasksCommitted"]);

/** Runs a flow of `children` children and a parent; the job record reads A and B made meanwhile. */
const readsOfFlow = async (children: number): Promise<number> => {
  const server = createMemoryServer();
  let reads = 0;
  const counted = () =>
    spiedBroker(createMemoryBroker({ server }), (name, _n, _args, call) => {
      if (recordReads.has(name)) reads += 1;
      return call();
    }).broker;
  const a = await createTestRuntime({ name: "a", roles: ["submitter", "supervisor"], broker: counted() });
  const b = await createTestRuntime({ name: "b", roles: ["submitter", "supervisor"], broker: counted() });
  const w = await createTestRuntime({ name: "w", roles: ["worker"], broker: createMemoryBroker({ server }) });
  try {
    // Every child's task runs at once and answers after a while: the nodes run together.
    w.workers.start<number, number>({
      queue: "q",
      concurrency: children + 1,
      handler: (task) =>
        new Promise((resolve) => setTimeout(() => resolve(task.payload), 300 + (task.payload % 7) * 50)),
    });
    const jobs: Record<string, { queue: string; tasks: number[]; dependsOn?: string[] }> = {};
    for (let n = 0; n < children; n++) jobs[`c${n}`] = { queue: "q", tasks: [n] };
    jobs.parent = { queue: "q", tasks: [-1], dependsOn: Object.keys(jobs) };
    const flow = await a.flows.submit({ id: "big", jobs });
    expect((await flow.done()).status).toBe("succeeded");
    return reads;
  } finally {
    await w.stop();
    await b.stop();
    await a.stop();
  }
};

describe("the job record reads of a flow's drivers", () => {
  for (const children of [200, 400]) {
    it(`grow with its children, not their square: ${children} children`, { timeout: 120_000 }, async () => {
      const reads = await readsOfFlow(children);
      expect(reads, `job record reads by the two drivers for ${children} children`).toBeLessThanOrEqual(
        readsPerChild * children,
      );
    });
  }
});
