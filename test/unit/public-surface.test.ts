/**
 * What a runtime hands its users is the documented calls and nothing more:
 * the registry's upkeep (stop, reap), the job and connection actors and the
 * memory server's stores stay inside src/ (tests reach them through
 * `partsOf`, `jobActorOf` and `memoryServerState`).
 */
import { describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { FlowRegistry, flowActorOf } from "../../src/api/flows.ts";
import { JobRegistry } from "../../src/api/jobs.ts";
import { partsOf } from "../../src/api/runtime.ts";
import { jobActorOf } from "../../src/api/runtime-job-handle.ts";
import { createMemoryServer, createTestRuntime } from "../../src/testing.ts";

describe("the public surface", () => {
  it("rt.jobs, a job handle and rt.connection carry only their documented members", async () => {
    const rt = await createTestRuntime();
    try {
      expect(Object.keys(rt.jobs).sort()).toEqual([
        "deadLetters",
        "events",
        "get",
        "list",
        "record",
        "redrive",
        "submit",
      ]);
      expect(rt.jobs).not.toBeInstanceOf(JobRegistry);
      expect(partsOf(rt).jobs).toBeInstanceOf(JobRegistry);
      expect(Object.keys(rt.schedules).sort()).toEqual(["get", "list", "remove", "upsert"]);
      expect(Object.keys(rt.connection).sort()).toEqual(["reset", "snapshot", "state", "subscribe"]);
      expect(rt.connection.state).toBe("idle");
      expect(Object.keys(rt.queues).sort()).toEqual(["configure", "get", "list", "pause", "resume"]);

      const job = await rt.jobs.submit({ queue: "surface", tasks: [1] });
      // Its methods are on its class's prototype: what it carries is its own keys and those.
      const methods = Object.getOwnPropertyNames(Object.getPrototypeOf(job)).filter(
        (k) => k !== "constructor",
      );
      expect([...Object.keys(job), ...methods].sort()).toEqual([
        "cancel",
        "done",
        "id",
        "onProgress",
        "queue",
        "results",
        "snapshot",
        "subscribe",
      ]);
      expect(jobActorOf(job).getSnapshot().context.jobId).toBe(job.id);
      // Its methods work taken off the handle, as they did when they were closures of its own.
      const { snapshot, done, cancel } = job;
      expect(snapshot().id).toBe(job.id);
      await cancel("taken off the handle");
      expect(await done()).toMatchObject({ status: "failed", reason: "cancelled: taken off the handle" });
      expect(() => jobActorOf({ ...job })).toThrow(/must be a job handle/);
    } finally {
      await rt.stop();
    }
  });

  it("rt.flows and a flow handle carry only their documented members", async () => {
    const rt = await createTestRuntime();
    try {
      expect(Object.keys(rt.flows).sort()).toEqual(["dependencies", "get", "submit"]);
      expect(rt.flows).not.toBeInstanceOf(FlowRegistry);
      expect(partsOf(rt).flows).toBeInstanceOf(FlowRegistry);
      const flow = await rt.flows.submit({ jobs: { a: { queue: "surface", tasks: [1] } } });
      expect(Object.keys(flow).sort()).toEqual(["cancel", "done", "id", "snapshot"]);
      expect(flowActorOf(flow).getSnapshot().context.flowId).toBe(flow.id);
      expect(() => flowActorOf({ ...flow })).toThrow(/must be a flow handle/);
      await flow.cancel("done looking");
    } finally {
      await rt.stop();
    }
  });

  it("a memory server shows its settings and close(), its stores only to the adapter", () => {
    const server = createMemoryServer({ prefix: "surface" });
    expect(server.prefix).toBe("surface");
    expect(memoryServerState(server).prefix).toBe("surface");
    expect(() => memoryServerState({ ...server })).toThrow(/createMemoryServer/);
    server.close();
  });
});
