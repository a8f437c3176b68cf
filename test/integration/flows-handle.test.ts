/**
 * A flow handle's cancel() and done() at their edges (found by a review):
 * a reason that is no string, a runtime already stopped, a runtime stopping
 * while done() waits. The oracle is the flow record read raw from the memory
 * server, and the handlers' ledger, never the runtime's answer alone.
 */
import { describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { InvalidArgument, RuntimeStopped } from "../../src/kernel/errors.ts";
import {
  createMemoryBroker,
  createMemoryServer,
  createTestRuntime,
  type MemoryServer,
} from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil, within } from "../harness/wait.ts";

/** The flow record as the memory server stores it, undecoded; undefined if none. */
const storedFlow = (server: MemoryServer, id: string): Record<string, unknown> | undefined => {
  const entry = memoryServerState(server)
    .flows.live()
    .find((e) => e.key === id);
  return entry ? (JSON.parse(entry.value as string) as Record<string, unknown>) : undefined;
};

/** A memory server and a broker on it whose flow record's write waits for `release()`; `writing()`: until it is under way. */
const heldFlowWrites = () => {
  const server = createMemoryServer();
  let release = () => {};
  let writing = false;
  const { broker } = spiedBroker(createMemoryBroker({ server }), (name, _n, _args, call) => {
    if (name !== "flows.createFlow") return call();
    writing = true;
    return new Promise((resolve) => {
      release = () => resolve(call());
    });
  });
  return {
    server,
    broker,
    writing: () => waitUntil(() => writing, { timeoutMs: 5000, message: "the record's write under way" }),
    release: () => release(),
  };
};

/** A runtime that submits and supervises, and one whose worker holds every task until released. */
const setUp = async () => {
  const server = createMemoryServer();
  const rt = await createTestRuntime({
    name: "driver",
    roles: ["submitter", "supervisor"],
    broker: createMemoryBroker({ server }),
  });
  const w = await createTestRuntime({
    name: "worker",
    roles: ["worker"],
    broker: createMemoryBroker({ server }),
  });
  const started: string[] = [];
  let release = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  w.workers.start({
    queue: "q",
    handler: async (task) => {
      started.push(String(task.payload));
      await released;
      return 1;
    },
  });
  return { server, rt, w, started, release };
};

describe("a flow handle", () => {
  it("cancel(null) is refused as an InvalidArgument naming reason; the record stays running", async () => {
    const { server, rt, w, started, release } = await setUp();
    const flow = await rt.flows.submit({ id: "f1", jobs: { a: { queue: "q", tasks: ["a"] } } });
    await waitUntil(() => started.length === 1, { timeoutMs: 10_000, message: "the task never started" });
    const before = storedFlow(server, "f1");
    const refused = await flow.cancel(null as unknown as string).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(InvalidArgument);
    expect((refused as InvalidArgument).field).toBe("reason");
    // Nothing was written: the record is the one stored before, still running.
    expect(storedFlow(server, "f1")).toEqual(before);
    expect(storedFlow(server, "f1")?.status).toBe("running");
    release();
    expect((await flow.done()).status).toBe("succeeded");
    expect(storedFlow(server, "f1")?.status).toBe("succeeded");
    await rt.stop();
    await w.stop();
  }, 20_000);

  it("cancel() after its runtime stopped rejects with RuntimeStopped, as a submit does; nothing is written", async () => {
    const { server, rt, w, started, release } = await setUp();
    const flow = await rt.flows.submit({ id: "f2", jobs: { a: { queue: "q", tasks: ["a"] } } });
    await waitUntil(() => started.length === 1, { timeoutMs: 10_000, message: "the task never started" });
    await rt.stop();
    const before = storedFlow(server, "f2");
    const submitted = await rt.flows
      .submit({ id: "f3", jobs: { a: { queue: "q", tasks: ["a"] } } })
      .catch((error: unknown) => error);
    expect(submitted).toBeInstanceOf(RuntimeStopped);
    const cancelled = await flow.cancel("too late").catch((error: unknown) => error);
    expect(cancelled).toBeInstanceOf(RuntimeStopped);
    expect(storedFlow(server, "f2")).toEqual(before);
    expect(storedFlow(server, "f2")?.status).toBe("running");
    release();
    await w.stop();
  }, 20_000);

  it("submit() whose record write is under way when its runtime stops rejects with RuntimeStopped naming the flow", async () => {
    // The record's write held until the runtime is stopping: XState's own error came out before.
    const { broker, writing, release } = heldFlowWrites();
    const rt = await createTestRuntime({ name: "stopping", roles: ["submitter"], broker });
    const submitted = rt.flows.submit({ id: "f6", jobs: { only: { queue: "q", tasks: [1] } } });
    await writing();
    const early = await rt.flows.get("f6");
    const stopping = rt.stop();
    await expect(submitted).rejects.toMatchObject({
      _tag: "RuntimeStopped",
      message: expect.stringContaining("f6"),
    });
    release();
    await stopping;
    // Its handle's cancel after the stop rejects as any call on a stopped runtime does: it waited
    // for good for the record's write of an actor the stop had stopped (found by a review).
    await expect(within(early!.cancel("too late"), 5000)).rejects.toMatchObject({ _tag: "RuntimeStopped" });
  });

  it("cancel() of a handle got while its flow's record is still being written cancels the flow once written", async () => {
    // `get` hands out the handle of a submit under way here; its cancel read no record, wrote
    // nothing, and the flow ran to its end (found by a review).
    const { server, broker, writing, release } = heldFlowWrites();
    const rt = await createTestRuntime({ name: "early", broker });
    const ran: number[] = [];
    const worker = rt.workers.start<number, number>({ queue: "q7", handler: (t) => ran.push(t.payload) });
    try {
      const submitted = rt.flows.submit({ id: "f7", jobs: { only: { queue: "q7", tasks: [1] } } });
      await writing();
      const early = await rt.flows.get("f7");
      const cancelled = early!.cancel("changed my mind");
      release();
      await submitted;
      expect(await cancelled).toMatchObject({ status: "cancelled" });
      expect(storedFlow(server, "f7")).toMatchObject({ status: "cancelled", reason: "changed my mind" });
    } finally {
      await worker.stop();
      await rt.stop();
    }
  });

  it("done() pending when its runtime stops rejects with RuntimeStopped, as a job's does", async () => {
    const { server, rt, w, started, release } = await setUp();
    const flow = await rt.flows.submit({ id: "f4", jobs: { a: { queue: "q", tasks: ["a"] } } });
    const job = await rt.jobs.submit({ queue: "q", tasks: ["job"] });
    await waitUntil(() => started.length === 2, { timeoutMs: 10_000, message: "the tasks never started" });
    const flowDone = flow.done().then(
      (snapshot) => snapshot,
      (error: unknown) => error,
    );
    const jobDone = job.done().then(
      (snapshot) => snapshot,
      (error: unknown) => error,
    );
    await rt.stop();
    expect(await jobDone).toBeInstanceOf(RuntimeStopped);
    expect(await flowDone).toBeInstanceOf(RuntimeStopped);
    // The flow did not end: its record still says running.
    expect(storedFlow(server, "f4")?.status).toBe("running");
    // And a done() asked after the stop says the same at once.
    expect(await flow.done().catch((error: unknown) => error)).toBeInstanceOf(RuntimeStopped);
    release();
    await w.stop();
  }, 20_000);

  it("cancel() and done() elsewhere settle once every job of the flow ended, as the record says", async () => {
    const { server, rt, w, started, release } = await setUp();
    const other = await createTestRuntime({
      name: "other",
      roles: ["submitter", "supervisor"],
      broker: createMemoryBroker({ server }),
    });
    const flow = await rt.flows.submit({
      id: "f5",
      jobs: {
        child: { queue: "q", tasks: ["child"] },
        parent: { queue: "q", tasks: ["parent"], dependsOn: ["child"] },
      },
    });
    await waitUntil(() => started.length === 1, {
      timeoutMs: 10_000,
      message: "the child's task never started",
    });
    const watched = await other.flows.get("f5");
    const cancelled = await watched!.cancel("stop");
    const ended = await flow.done();
    for (const seen of [cancelled, ended]) {
      expect(seen.status).toBe("cancelled");
      // No job of the flow is running or still to be submitted, and each node is as stored.
      const stored = storedFlow(server, "f5") as { nodes: Record<string, { status: string }> };
      for (const [name, node] of Object.entries(seen.nodes)) {
        expect(["running", "submitting", "waiting"], name).not.toContain(node.status);
        expect(node.status, name).toBe(stored.nodes[name]?.status);
      }
      const childJob = memoryServerState(server)
        .records.live()
        .find((e) => e.key === seen.nodes.child?.jobId);
      expect(JSON.parse(childJob!.value as string).status).toBe("failed");
    }
    release();
    await other.stop();
    await rt.stop();
    await w.stop();
  }, 20_000);
});
