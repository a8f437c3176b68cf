import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/index.ts";
import { silentLogger } from "../../src/logger.ts";
import { createTestRuntime } from "../../src/testing.ts";
import { badSubmits } from "../harness/bad-submits.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

/**
 * The same bad input gets the same typed error from a memory runtime and a
 * NATS runtime (issue #9): the same `_tag` and the same `field` (or
 * `agentId`), so code written against one broker handles the other's errors.
 */

/** What a call ended with: the typed error's identity, or what it returned. */
const outcome = async (act: () => unknown) => {
  try {
    const value = await act();
    // A worker that started after all must not keep pulling.
    if (typeof (value as { stop?: unknown })?.stop === "function")
      await (value as { stop(): Promise<void> }).stop();
    // Plain values as they are, objects by their type: an AgentState holds times, a handle an actor.
    return { returned: typeof value === "object" && value !== null ? "object" : value };
  } catch (error) {
    const { _tag, field, agentId } = error as { _tag?: string; field?: string; agentId?: string };
    return { _tag, ...(field === undefined ? {} : { field }), ...(agentId === undefined ? {} : { agentId }) };
  }
};

describe("bad input: the same typed errors from the memory broker and from NATS", () => {
  let server: NatsServerHandle;
  let nats: Runtime;
  let memory: Runtime;
  beforeAll(async () => {
    server = await startNatsServer();
    nats = await createRuntime({ servers: server.url, logger: silentLogger() });
    memory = await createTestRuntime();
  });
  afterAll(async () => {
    await memory?.stop();
    await nats?.stop();
    await server?.dispose();
  });

  /** Runs `act` on both runtimes: what each ended with, memory first. */
  const both = async (act: (rt: Runtime) => unknown) => [
    await outcome(() => act(memory)),
    await outcome(() => act(nats)),
  ];

  it.each(badSubmits)("submit: %s", async (_name, request, field) => {
    const [fromMemory, fromNats] = await both((rt) => rt.jobs.submit(request as never));
    expect(fromMemory).toEqual({ _tag: "InvalidArgument", field });
    expect(fromNats).toEqual(fromMemory);
  });

  it("the bad submits left nothing behind on either", async () => {
    expect(await memory.jobs.list()).toEqual([]);
    expect(await nats.jobs.list()).toEqual([]);
  });

  const handler = () => 1;
  const workers: Array<[string, Record<string, unknown>, Record<string, string>]> = [
    ["queue with a dot", { queue: "a.b", handler }, { _tag: "InvalidArgument", field: "queue" }],
    ["empty queue", { queue: "", handler }, { _tag: "InvalidArgument", field: "queue" }],
    ["queue neither a name nor a queue", { queue: {}, handler }, { _tag: "InvalidArgument", field: "queue" }],
    [
      "concurrency 0",
      { queue: "q", concurrency: 0, handler },
      { _tag: "InvalidArgument", field: "concurrency" },
    ],
    [
      "concurrency not an integer",
      { queue: "q", concurrency: 1.5, handler },
      { _tag: "InvalidArgument", field: "concurrency" },
    ],
    [
      "concurrency above 10000",
      { queue: "q", concurrency: 10_001, handler },
      { _tag: "InvalidArgument", field: "concurrency" },
    ],
    ["handler not a function", { queue: "q", handler: "run" }, { _tag: "InvalidArgument", field: "handler" }],
    [
      "an unknown option",
      { queue: "q", handler, concurency: 4 },
      { _tag: "InvalidArgument", field: "concurency" },
    ],
    [
      "a negative stopTimeoutMs",
      { queue: "q", handler, stopTimeoutMs: -1 },
      { _tag: "InvalidArgument", field: "stopTimeoutMs" },
    ],
    ["maxTaskMs 0", { queue: "q", handler, maxTaskMs: 0 }, { _tag: "InvalidArgument", field: "maxTaskMs" }],
    [
      "bound to an unknown agent",
      { queue: "q", agent: "nobody", handler },
      { _tag: "UnknownAgent", agentId: "nobody" },
    ],
  ];

  it.each(workers)("worker: %s", async (_name, options, expected) => {
    const [fromMemory, fromNats] = await both((rt) => rt.workers.start(options as never));
    expect(fromMemory).toEqual(expected);
    expect(fromNats).toEqual(fromMemory);
  });

  const agents: Array<[string, Record<string, unknown>, string]> = [
    ["empty agentId", { agentId: "", targets: ["A"], current: "A" }, "agentId"],
    ["agentId not a string", { agentId: 7, targets: ["A"], current: "A" }, "agentId"],
    ["no targets", { agentId: "a1", targets: [], current: "A" }, "targets"],
    ["targets not a list", { agentId: "a2", targets: "A", current: "A" }, "targets"],
    ["an empty target", { agentId: "a3", targets: ["A", ""], current: "A" }, "targets"],
    ["a target twice", { agentId: "a4", targets: ["A", "A"], current: "A" }, "targets"],
    ["current not a target", { agentId: "a5", targets: ["A"], current: "B" }, "current"],
    ["skipForMs negative", { agentId: "a6", targets: ["A"], current: "A", skipForMs: -1 }, "skipForMs"],
    [
      "skipForMs not finite",
      { agentId: "a7", targets: ["A"], current: "A", skipForMs: Number.NaN },
      "skipForMs",
    ],
  ];

  it.each(agents)("agent: %s", async (_name, options, field) => {
    const [fromMemory, fromNats] = await both((rt) => rt.agents.register(options as never));
    expect(fromMemory).toEqual({ _tag: "InvalidArgument", field });
    expect(fromNats).toEqual(fromMemory);
  });

  it("agent: registered twice, a failure on an unknown agent or on a target it does not list", async () => {
    const register = (rt: Runtime) =>
      rt.agents.register({ agentId: "twice", targets: ["A", "B"], current: "A" });
    expect(await both(register)).toEqual([{ returned: "object" }, { returned: "object" }]);
    expect(await both(register)).toEqual([
      { _tag: "InvalidArgument", field: "agentId" },
      { _tag: "InvalidArgument", field: "agentId" },
    ]);
    expect(await both((rt) => rt.agents.reportFailure("nobody", { target: "A" }))).toEqual([
      { _tag: "UnknownAgent", agentId: "nobody" },
      { _tag: "UnknownAgent", agentId: "nobody" },
    ]);
    expect(await both((rt) => rt.agents.reportFailure("twice", { target: "Z" }))).toEqual([
      { _tag: "InvalidArgument", field: "target" },
      { _tag: "InvalidArgument", field: "target" },
    ]);
  });

  // An agent id that is not a KV key: refused by the registry itself, so by both brokers alike.
  it.each([
    ["a space", "has space"],
    ["a wildcard", "a*"],
    ["a full wildcard", ">"],
  ])("agent: an agentId with %s", async (_name, agentId) => {
    const [fromMemory, fromNats] = await both((rt) =>
      rt.agents.register({ agentId, targets: ["A"], current: "A" }),
    );
    expect(fromNats).toEqual({ _tag: "InvalidArgument", field: "agentId" });
    expect(fromMemory).toEqual(fromNats);
  });

  // Job ids that no job can have: the memory broker refused to list their dead letters
  // (PermanentBrokerError) where NATS finds none; fixed in src/adapters/memory/memory-dead-letters.ts.
  it.each([
    ["a dot", "a.b"],
    ["a space", "a b"],
    ["a wildcard", "*"],
    ["nothing", ""],
    ["an unknown id", "nope"],
  ])("job id with %s: no dead letters, nothing to redrive", async (_name, id) => {
    expect(await both(async (rt) => JSON.stringify(await rt.jobs.deadLetters(id)))).toEqual([
      { returned: "[]" },
      { returned: "[]" },
    ]);
    expect(await both((rt) => rt.jobs.redrive(id))).toEqual([
      { _tag: "InvalidArgument", field: "taskIds" },
      { _tag: "InvalidArgument", field: "taskIds" },
    ]);
  });

  it("jobs.get: an empty id is InvalidArgument, an id that is not a key the same broker error", async () => {
    expect(await both((rt) => rt.jobs.get(""))).toEqual([
      { _tag: "InvalidArgument", field: "id" },
      { _tag: "InvalidArgument", field: "id" },
    ]);
    const [fromMemory, fromNats] = await both((rt) => rt.jobs.get("a b"));
    expect(fromMemory).toEqual({ _tag: "PermanentBrokerError" });
    expect(fromNats).toEqual(fromMemory);
  });
});
