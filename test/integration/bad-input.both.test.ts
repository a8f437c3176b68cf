import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { partsOf } from "../../src/api/runtime.ts";
import { createRuntime, type Runtime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { badSubmits, long } from "../harness/bad-submits.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

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
    expect((await memory.jobs.list()).jobs).toEqual([]);
    expect((await nats.jobs.list()).jobs).toEqual([]);
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
      "a stopTimeoutMs beyond a timer's reach",
      { queue: "q", handler, stopTimeoutMs: 2 ** 31 },
      { _tag: "InvalidArgument", field: "stopTimeoutMs" },
    ],
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
    ["an empty target", { agentId: "a3", targets: ["A", ""], current: "A" }, "targets[1]"],
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

  // A job id no job can have is refused before anything is sent, the same on both brokers
  // (before, the memory broker refused to list its dead letters where NATS found none).
  it.each([
    ["a dot", "a.b"],
    ["a space", "a b"],
    ["a wildcard", "*"],
    ["nothing", ""],
  ])("job id with %s: InvalidArgument naming the id", async (_name, id) => {
    const refused = { _tag: "InvalidArgument", field: "id" };
    expect(await both((rt) => rt.jobs.deadLetters(id))).toEqual([refused, refused]);
    expect(await both((rt) => rt.jobs.redrive(id))).toEqual([refused, refused]);
    expect(await both((rt) => rt.jobs.get(id))).toEqual([refused, refused]);
  });

  // A redrive of an unknown job names the id, as the redrive of a job gone since does (it named
  // `taskIds`, which was not passed).
  it("an unknown job id: no dead letters, no job to redrive, no job", async () => {
    expect(await both(async (rt) => JSON.stringify(await rt.jobs.deadLetters("nope")))).toEqual([
      { returned: "[]" },
      { returned: "[]" },
    ]);
    expect(await both((rt) => rt.jobs.redrive("nope"))).toEqual([
      { _tag: "InvalidArgument", field: "id" },
      { _tag: "InvalidArgument", field: "id" },
    ]);
    for (const rt of [memory, nats])
      await expect(rt.jobs.redrive("nope", [0])).rejects.toMatchObject({
        field: "id",
        message: "id: no job nope",
      });
    expect(await both((rt) => rt.jobs.get("nope"))).toEqual([
      { returned: undefined },
      { returned: undefined },
    ]);
  });

  it("a cancel whose reason is not a string (from JavaScript) is refused, and the job runs on", async () => {
    const ids: string[] = [];
    expect(
      await both(async (rt) => {
        const job = await rt.jobs.submit({ queue: "badcancel", tasks: [1, 2] });
        ids.push(job.id);
        return job.cancel({ why: "object" } as unknown as string);
      }),
    ).toEqual([
      { _tag: "InvalidArgument", field: "reason" },
      { _tag: "InvalidArgument", field: "reason" },
    ]);
    for (const [rt, id] of [
      [memory, ids[0]],
      [nats, ids[1]],
    ] as const)
      expect((await rt.jobs.record(id!))?.status).toBe("running");
  });

  /**
   * Ids, keys and names a user gives, too long for the server's control line
   * or with characters no subject may hold (issue #12, item 12): refused
   * before anything is sent. Before the fix a 5,000-character job or agent id
   * went out in a subject, the server closed the runtime's only connection,
   * and the call was retried until it timed out.
   */
  describe("ids, keys and names are checked before anything is sent", () => {
    const views: string[] = [];
    let unsubscribe = () => {};
    let generation = 0;
    beforeAll(async () => {
      expect(await server.connectionCount()).toBe(1);
      generation = nats.connection.snapshot().generation;
      unsubscribe = nats.connection.subscribe((view) => views.push(`${view.state}#${view.generation}`));
    });
    afterAll(() => unsubscribe());

    const calls: Array<[string, (rt: Runtime) => unknown, string]> = [
      ["jobs.get with a 5,000-character id", (rt) => rt.jobs.get(long), "id"],
      ["jobs.get with a space in the id", (rt) => rt.jobs.get("a b"), "id"],
      ["jobs.get with a wildcard id", (rt) => rt.jobs.get(">"), "id"],
      ["jobs.deadLetters with a 5,000-character id", (rt) => rt.jobs.deadLetters(long), "id"],
      ["jobs.deadLetters with a dot in the id", (rt) => rt.jobs.deadLetters("a.b"), "id"],
      ["jobs.redrive with a 5,000-character id", (rt) => rt.jobs.redrive(long), "id"],
      ["jobs.redrive with a wildcard id", (rt) => rt.jobs.redrive("*"), "id"],
      ["jobs.redrive with a 5,000-character task id", (rt) => rt.jobs.redrive("nope", [long]), "taskIds[0]"],
      ["jobs.redrive with a negative task index", (rt) => rt.jobs.redrive("nope", [0, -1]), "taskIds[1]"],
      ["jobs.redrive with taskIds not a list", (rt) => rt.jobs.redrive("nope", "1" as never), "taskIds"],
      ["jobs.list with a 5,000-character queue", (rt) => rt.jobs.list({ queue: long }), "queue"],
      ["jobs.list with an unknown status", (rt) => rt.jobs.list({ status: "done" as never }), "status"],
      ["jobs.list with a limit of 0", (rt) => rt.jobs.list({ limit: 0 }), "limit"],
      ["jobs.list with a limit over 1,000", (rt) => rt.jobs.list({ limit: 1001 }), "limit"],
      ["jobs.list with a fractional limit", (rt) => rt.jobs.list({ limit: 2.5 }), "limit"],
      ["jobs.list with a cursor jetstate did not give", (rt) => rt.jobs.list({ cursor: "nope" }), "cursor"],
      [
        "jobs.list with a cursor of a negative position",
        (rt) => rt.jobs.list({ cursor: Buffer.from("v1:-1").toString("base64url") }),
        "cursor",
      ],
      ["jobs.list with a cursor not a string", (rt) => rt.jobs.list({ cursor: 7 as never }), "cursor"],
      ["jobs.list with a misspelt cursor", (rt) => rt.jobs.list({ cursr: "x" } as never), "cursr"],
      [
        "agents.register with a 5,000-character agent id",
        (rt) => rt.agents.register({ agentId: long, targets: ["A"], current: "A" }),
        "agentId",
      ],
      [
        "agents.register with a 5,000-character target",
        (rt) => rt.agents.register({ agentId: "long-target", targets: ["A", long], current: "A" }),
        "targets[1]",
      ],
      [
        "agents.reportFailure with a 5,000-character agent id",
        (rt) => rt.agents.reportFailure(long, { target: "A" }),
        "agentId",
      ],
      [
        "workers.start bound to a 5,000-character agent id",
        (rt) => rt.workers.start({ queue: "q", agent: long, handler: () => 1 }),
        "agent",
      ],
      [
        "workers.start on a 5,000-character queue",
        (rt) => rt.workers.start({ queue: long, handler: () => 1 }),
        "queue",
      ],
    ];

    it.each(calls)("%s: InvalidArgument naming the field on both", async (_name, act, field) => {
      const [fromMemory, fromNats] = await both(act);
      expect(fromMemory).toEqual({ _tag: "InvalidArgument", field });
      expect(fromNats).toEqual(fromMemory);
    });

    it("the NATS runtime kept its one connection: no drop, no reconnect, no new client", async () => {
      // An operation after all of them still works on the same connection.
      expect(Array.isArray((await nats.jobs.list()).jobs)).toBe(true);
      expect(views, "connection state changes while the bad calls ran").toEqual([]);
      expect(nats.connection.snapshot()).toMatchObject({ state: "connected", generation });
      expect(await server.connectionCount()).toBe(1);
    });
  });

  // A negative or NaN retention would remove every finished job, or none, without a word.
  it.each([
    ["retentionMs -1", { retentionMs: -1 }, "retentionMs"],
    ["retentionMs NaN", { retentionMs: Number.NaN }, "retentionMs"],
    ["retentionMs Infinity", { retentionMs: Number.POSITIVE_INFINITY }, "retentionMs"],
    ['dryRun "yes"', { dryRun: "yes" }, "dryRun"],
    ["an unknown option", { dryrun: true }, "dryrun"],
  ])("admin.cleanup with %s: InvalidArgument naming the field", async (_name, options, field) => {
    const refused = { _tag: "InvalidArgument", field };
    expect(await both((rt) => rt.admin.cleanup(options as never))).toEqual([refused, refused]);
  });

  /**
   * Idempotency keys (item 13): scoped by queue, and a key reused for a
   * different request is an `IdempotencyConflict`, never the other job. The
   * oracle is the broker's own list of records, read after the submits.
   */
  describe("idempotency keys", () => {
    const recordsWithKey = async (rt: Runtime, key: string) =>
      (await rt.jobs.list()).jobs
        .filter((r) => r.idempotencyKey === key)
        .map((r) => ({ queue: r.queue, id: r.id }));

    it("the same key on two queues makes two jobs, each on its own queue", async () => {
      for (const rt of [memory, nats]) {
        const a = await rt.jobs.submit({ queue: "qa", tasks: [1, 2], idempotencyKey: "order-1" });
        const b = await rt.jobs.submit({ queue: "qb", tasks: [1, 2], idempotencyKey: "order-1" });
        expect(b.id).not.toBe(a.id);
        const records = await recordsWithKey(rt, "order-1");
        expect(records.sort((x, y) => x.queue.localeCompare(y.queue))).toEqual([
          { queue: "qa", id: a.id },
          { queue: "qb", id: b.id },
        ]);
      }
    });

    it("the same key with the same tasks and settings still gives the same job", async () => {
      for (const rt of [memory, nats]) {
        const request = {
          queue: "qa",
          tasks: [{ n: 1 }, { n: 2 }],
          idempotencyKey: "order-2",
          maxDeliver: 3,
        };
        const first = await rt.jobs.submit(request);
        const again = await rt.jobs.submit({ ...request, tasks: [{ n: 1 }, { n: 2 }] });
        expect(again.id).toBe(first.id);
        expect(await recordsWithKey(rt, "order-2")).toEqual([{ queue: "qa", id: first.id }]);
      }
    });

    const conflicts: Array<[string, Record<string, unknown>]> = [
      ["different tasks", { tasks: [1, 3] }],
      ["one task more", { tasks: [1, 2, 3] }],
      ["a different maxDeliver", { maxDeliver: 9 }],
      ["a different backoff", { backoff: [10] }],
    ];
    it.each(conflicts)(
      "the same key with %s: IdempotencyConflict, the first job untouched",
      async (name, change) => {
        const key = `conflict-${name.replaceAll(" ", "-")}`;
        const [fromMemory, fromNats] = await both(async (rt) => {
          const first = await rt.jobs.submit({ queue: "qc", tasks: [1, 2], idempotencyKey: key });
          const outcomeOfSecond = await outcome(() =>
            rt.jobs.submit({ queue: "qc", tasks: [1, 2], idempotencyKey: key, ...change }),
          );
          const records = await recordsWithKey(rt, key);
          const stored = await partsOf(rt).broker.getRecord(first.id);
          return JSON.stringify({
            outcomeOfSecond,
            records: records.length,
            sameId: records[0]?.id === first.id,
            total: stored?.record.total,
            status: stored?.record.status,
          });
        });
        const expected = JSON.stringify({
          outcomeOfSecond: { _tag: "IdempotencyConflict" },
          records: 1,
          sameId: true,
          total: 2,
          status: "running",
        });
        expect(fromMemory).toEqual({ returned: expected });
        expect(fromNats).toEqual(fromMemory);
      },
    );

    it("two submits of one key with different tasks at once on one runtime: the second is a conflict", async () => {
      const [fromMemory, fromNats] = await both(async (rt) => {
        const first = rt.jobs.submit({ queue: "qe", tasks: [1, 2], idempotencyKey: "at-once" });
        const second = outcome(() => rt.jobs.submit({ queue: "qe", tasks: [7], idempotencyKey: "at-once" }));
        const [firstId, secondOutcome] = [(await first).id, await second];
        const records = await recordsWithKey(rt, "at-once");
        return JSON.stringify({
          first: firstId === records[0]?.id,
          second: secondOutcome,
          n: records.length,
        });
      });
      expect(fromMemory).toEqual({
        returned: JSON.stringify({ first: true, second: { _tag: "IdempotencyConflict" }, n: 1 }),
      });
      expect(fromNats).toEqual(fromMemory);
    });

    it("a job submitted before keys were scoped by queue is still the job its key names", async () => {
      // What an older jetstate wrote: the job id from the key alone, no digest.
      const legacyId = `k${createHash("sha256").update("legacy-key").digest("base64url").slice(0, 32)}`;
      const [fromMemory, fromNats] = await both(async (rt) => {
        const template = await rt.jobs.submit({ queue: "ql", tasks: [1, 2] });
        const { broker } = partsOf(rt);
        const stored = (await broker.getRecord(template.id))!.record;
        await broker.createRecord({ ...stored, id: legacyId, idempotencyKey: "legacy-key" });
        const same = await rt.jobs.submit({ queue: "ql", tasks: [1, 2], idempotencyKey: "legacy-key" });
        const otherQueue = await rt.jobs.submit({ queue: "qm", tasks: [1, 2], idempotencyKey: "legacy-key" });
        return JSON.stringify({ same: same.id === legacyId, otherQueue: otherQueue.id !== legacyId });
      });
      expect(fromMemory).toEqual({ returned: JSON.stringify({ same: true, otherQueue: true }) });
      expect(fromNats).toEqual(fromMemory);
    });

    // The key of a job that workers are answering, submitted from another runtime: before,
    // that runtime started a submit actor which sat in `queuing` while answers came in,
    // dropped them, and its handle never finished.
    it.each([["memory"], ["NATS"]])(
      "on %s, the key of a running job submitted from another runtime: its handle sees every answer",
      async (brokerName) => {
        const shared = createMemoryServer();
        const open = (holder: string) =>
          brokerName === "NATS"
            ? createRuntime({ servers: server.url, logger: silentLogger() })
            : createTestRuntime({
                broker: createMemoryBroker({ server: shared, holder }),
                logger: silentLogger(),
              });
        const [first, second] = [await open("first"), await open("second")];
        let release = () => {};
        const gate = new Promise<void>((resolve) => {
          release = resolve;
        });
        const answered = new Set<number>();
        const worker = first.workers.start<number, number>({
          queue: "qr",
          handler: async (task) => {
            if (task.index === 4) await gate;
            answered.add(task.index);
            return task.payload;
          },
        });
        try {
          const tasks = [0, 1, 2, 3, 4];
          const job = await first.jobs.submit({
            queue: "qr",
            tasks,
            idempotencyKey: `running-${brokerName}`,
          });
          await waitUntil(() => job.snapshot().done === 4, { timeoutMs: 10_000, message: "four answers" });
          const again = await second.jobs.submit({
            queue: "qr",
            tasks,
            idempotencyKey: `running-${brokerName}`,
          });
          expect(again.id).toBe(job.id);
          release();
          await waitUntil(() => answered.size === 5, { timeoutMs: 10_000, message: "the last answer" });
          await waitUntil(() => again.snapshot().status === "succeeded", {
            timeoutMs: 10_000,
            message: "the second runtime's handle to see the job succeed",
          });
          expect(again.snapshot()).toMatchObject({ done: 5, failed: 0, dead: 0 });
        } finally {
          release();
          await worker.stop();
          await second.stop();
          await first.stop();
        }
      },
    );

    it("a record written before the digest existed is taken as matching", async () => {
      for (const rt of [memory, nats]) {
        const first = await rt.jobs.submit({ queue: "qd", tasks: [1], idempotencyKey: "old-record" });
        const { broker } = partsOf(rt);
        const found = await broker.getRecord(first.id);
        const { requestDigest: _dropped, ...old } = found!.record;
        await broker.updateRecord(old, found!.revision);
        const again = await rt.jobs.submit({ queue: "qd", tasks: [1, 2], idempotencyKey: "old-record" });
        expect(again.id).toBe(first.id);
      }
    });
  });
});
