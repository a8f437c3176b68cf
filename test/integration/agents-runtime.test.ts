/**
 * Agents through the runtime (issue #6): `rt.agents` on the runtime's one
 * connection (the lock's KV store goes through the supervised connection),
 * and workers bound to an agent failing over to its new target.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createRuntime,
  InvalidArgument,
  type Runtime,
  RuntimeStopped,
  type SwitchNotice,
  TargetUnavailable,
  UnknownAgent,
} from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

const collect = async <R>(results: AsyncIterable<R>) => {
  const all: R[] = [];
  for await (const r of results) all.push(r);
  return all;
};

const rejection = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    () => undefined,
    (error: unknown) => error,
  );

const thrown = (run: () => unknown): unknown => {
  try {
    run();
  } catch (error) {
    return error;
  }
  return undefined;
};

describe("agents through the runtime", () => {
  let server: NatsServerHandle;
  let rt: Runtime;

  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({ servers: server.url, name: "agents-runtime", logger: silentLogger() });
  });
  afterAll(async () => {
    await rt?.stop();
    expect(rt?.connection.state).toBe("closed");
    await server?.dispose();
  });

  it("100 concurrent failures on A: exactly one switch, on the one connection", async () => {
    const notices: SwitchNotice[] = [];
    const registered = await rt.agents.register({
      agentId: "burst",
      targets: ["A", "B", "C"],
      current: "A",
      onSwitch: (notice) => {
        notices.push(notice);
      },
    });
    expect(registered).toMatchObject({ current: "A", switches: 0, lock: "idle" });

    const outcomes = await Promise.all(
      range(100).map((i) =>
        rt.agents.reportFailure("burst", { target: "A", error: new Error(`A answered 503 (#${i})`) }),
      ),
    );
    expect(outcomes.filter((o) => o.outcome === "switched")).toEqual([
      { outcome: "switched", from: "A", to: "B" },
    ]);
    expect(outcomes.filter((o) => o.outcome === "stale")).toHaveLength(99);
    expect(notices.map(({ from, to }) => `${from}->${to}`)).toEqual(["A->B"]);
    expect(rt.agents.get("burst")).toMatchObject({
      current: "B",
      switches: 1,
      lastSwitch: { from: "A", to: "B" },
      skips: [{ target: "A" }],
      lock: "idle",
      queued: 0,
    });
    expect(await server.connectionCount()).toBe(1);

    // The record is in KV: another runtime (another process, as far as the lock knows) adopts it,
    // and its stop() stops its locks.
    const other = await createRuntime({ servers: server.url, name: "agents-other", logger: silentLogger() });
    try {
      const adopted = await other.agents.register({
        agentId: "burst",
        targets: ["A", "B", "C"],
        current: "A",
      });
      expect(adopted).toMatchObject({ current: "B", switches: 1 });
    } finally {
      await other.stop();
    }
    expect(await rejection(other.agents.reportFailure("burst", { target: "B" }))).toBeInstanceOf(
      RuntimeStopped,
    );
    expect(
      await rejection(other.agents.register({ agentId: "late", targets: ["A"], current: "A" })),
    ).toBeInstanceOf(RuntimeStopped);
    await waitUntil(async () => (await server.connectionCount()) === 1, {
      timeoutMs: 10_000,
      message: "the stopped runtime's connection to close",
    });
  });

  it("a worker bound to the agent: tasks failing on A are retried at once on B, none counted failed", async () => {
    const agentId = "detector";
    const switches: string[] = [];
    await rt.agents.register({
      agentId,
      targets: ["A", "B", "C"],
      current: "A",
      onSwitch: ({ from, to }) => {
        switches.push(`${from}->${to}`);
      },
    });
    // A fake upstream: A is down, B and C answer.
    const down = new Set(["A"]);
    const tried: Array<{ index: number; target: string | undefined; attempt: number }> = [];
    const succeeded = new Map<number, string[]>();
    const worker = rt.workers.start<{ n: number }, string>({
      queue: "upstream",
      concurrency: 8,
      agent: agentId,
      handler: (task, ctx) => {
        const target = ctx.target ?? "none";
        tried.push({ index: task.index, target: ctx.target, attempt: task.attempt });
        if (down.has(target)) {
          throw new TargetUnavailable({ agentId, target, message: `${target} answered 503` });
        }
        succeeded.set(task.index, [...(succeeded.get(task.index) ?? []), target]);
        return `${task.payload.n} on ${target}`;
      },
    });
    const tasks = 40;
    // A backoff no test waits out: a failover that backed off would time out here.
    const job = await rt.jobs.submit({
      queue: "upstream",
      tasks: range(tasks).map((n) => ({ n })),
      backoff: [120_000],
    });
    await waitUntil(() => job.snapshot().status !== "running", {
      timeoutMs: 20_000,
      message: "the job to end without waiting out its backoff",
    });
    const final = await job.done();
    await worker.stop();

    expect(final).toMatchObject({ status: "succeeded", done: tasks, failed: 0, dead: 0, total: tasks });
    const results = await collect(job.results());
    expect(results).toHaveLength(tasks);
    expect(results.every((r) => r.ok && r.result === `${r.index} on B`)).toBe(true);
    // Every task succeeded exactly once, on B.
    expect([...succeeded.keys()].sort((a, b) => a - b)).toEqual(range(tasks));
    expect([...succeeded.values()].every((on) => on.length === 1 && on[0] === "B")).toBe(true);
    // The first tasks ran on A; each failed there at most once and then ran on B.
    const onA = tried.filter((t) => t.target === "A");
    expect(onA.length).toBeGreaterThan(0);
    expect(new Set(onA.map((t) => t.index)).size).toBe(onA.length);
    expect(onA.every((t) => t.attempt === 1)).toBe(true);
    expect(tried.every((t) => t.target === "A" || t.target === "B")).toBe(true);

    expect(switches).toEqual(["A->B"]);
    expect(rt.agents.get(agentId)).toMatchObject({ current: "B", switches: 1, exhausted: false });
    expect(worker.stats()).toMatchObject({ processed: tasks, failed: 0, released: onA.length });
    expect(await server.connectionCount()).toBe(1);
  });

  it("an agent with nowhere to go: the task is retried after the job's backoff, not at once", async () => {
    const agentId = "solo";
    await rt.agents.register({ agentId, targets: ["A"], current: "A" });
    const backoffMs = 400;
    const seen: Array<{ attempt: number; at: number; target: string | undefined }> = [];
    const worker = rt.workers.start<{ n: number }, string>({
      queue: "solo",
      agent: agentId,
      handler: (task, ctx) => {
        seen.push({ attempt: task.attempt, at: Date.now(), target: ctx.target });
        // A is back by the second delivery.
        if (task.attempt === 1) throw new TargetUnavailable({ agentId, target: "A", message: "A is down" });
        return "ok";
      },
    });
    const job = await rt.jobs.submit({ queue: "solo", tasks: [{ n: 1 }], backoff: [backoffMs] });
    const final = await job.done();
    await worker.stop();

    expect(final).toMatchObject({ status: "succeeded", done: 1, failed: 0 });
    expect(seen.map((s) => [s.attempt, s.target])).toEqual([
      [1, "A"],
      [2, "A"],
    ]);
    const [first, second] = seen;
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(backoffMs - 50);
    expect(rt.agents.get(agentId)).toMatchObject({ current: "A", switches: 0, exhausted: true });
    expect(worker.stats()).toMatchObject({ processed: 1, failed: 0, released: 1 });
  });

  it("bad input through the runtime: typed errors", async () => {
    const unknown = await rejection(rt.agents.reportFailure("nobody", { target: "A" }));
    expect(unknown).toBeInstanceOf(UnknownAgent);
    expect(unknown).toMatchObject({ _tag: "UnknownAgent", agentId: "nobody" });

    await rt.agents.register({ agentId: "picky", targets: ["A", "B"], current: "A" });
    expect(await rejection(rt.agents.reportFailure("picky", { target: "Z" }))).toMatchObject({
      _tag: "InvalidArgument",
      field: "target",
    });

    const empty = await rejection(rt.agents.register({ agentId: "empty", targets: [], current: "A" }));
    expect(empty).toBeInstanceOf(InvalidArgument);
    expect(empty).toMatchObject({ field: "targets" });
    expect(
      await rejection(rt.agents.register({ agentId: "elsewhere", targets: ["A"], current: "B" })),
    ).toMatchObject({ _tag: "InvalidArgument", field: "current" });

    expect(
      await rejection(rt.agents.register({ agentId: "picky", targets: ["A", "B"], current: "A" })),
    ).toMatchObject({ _tag: "InvalidArgument", field: "agentId" });
    // Two registrations racing: one wins, the other is the duplicate.
    const racing = await Promise.allSettled(
      [1, 2].map(() => rt.agents.register({ agentId: "twice", targets: ["A"], current: "A" })),
    );
    expect(racing.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
    expect(racing.find((r) => r.status === "rejected")).toMatchObject({
      reason: { _tag: "InvalidArgument", field: "agentId" },
    });

    // Refused by the KV store, through the supervised connection, and not retried.
    expect(
      await rejection(rt.agents.register({ agentId: "has space", targets: ["A"], current: "A" })),
    ).toMatchObject({ _tag: "InvalidArgument", field: "agentId" });
    expect(rt.agents.get("has space")).toBeUndefined();

    const unbound = thrown(() =>
      rt.workers.start({ queue: "nowhere", agent: "nobody", handler: () => "never" }),
    );
    expect(unbound).toBeInstanceOf(UnknownAgent);
    expect(unbound).toMatchObject({ agentId: "nobody" });
  });
});
