/**
 * A limit per agent target (`rt.queues.configure(queue, { perTarget })`), on
 * both brokers: workers of two runtimes, bound to two agents whose current
 * target is the same, share that target's cap; a third worker, on another
 * target, has a pool of its own. The oracle is the handlers' own ledger (the
 * target each ran against, when it started and ended) and, on NATS, the
 * permits stream read by the test's own client.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { maxOverlap, mostStartsPerSecond } from "../harness/intervals.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay } from "../harness/wait.ts";

interface Run {
  readonly target: string | undefined;
  readonly by: string;
  readonly start: number;
  readonly end: number;
}

const A = "https://a.example/v1";
const B = "https://b.example/v1";

let nats: NatsServerHandle;
let raw: NatsConnection;
beforeAll(async () => {
  nats = await startNatsServer();
  raw = await connect({ servers: nats.url });
});
afterAll(async () => {
  await raw?.close();
  await nats?.dispose();
});

const now = () => performance.timeOrigin + performance.now();

describe.each(["memory", "nats"])("a limit per agent target on %s", (broker) => {
  const runtimes: Runtime[] = [];
  let memoryServer: ReturnType<typeof createMemoryServer> | undefined;
  const runtime = async (name: string) => {
    memoryServer ??= broker === "memory" ? createMemoryServer() : undefined;
    const rt = memoryServer
      ? await createTestRuntime({ name, broker: createMemoryBroker({ server: memoryServer }) })
      : await createRuntime({ servers: nats.url, name, logger: silentLogger() });
    runtimes.push(rt);
    return rt;
  };
  afterAll(async () => {
    for (const rt of runtimes.splice(0)) await rt.stop();
  });

  it("perTarget.maxConcurrency: 2 holds per target across two runtimes; another target has its own pool", async () => {
    const [admin, one, two] = [await runtime("admin"), await runtime("one"), await runtime("two")];
    await admin.queues.configure("llm", { perTarget: { maxConcurrency: 2 } });
    expect(await admin.queues.get("llm")).toMatchObject({ perTarget: { maxConcurrency: 2 } });
    await one.agents.register({ agentId: "a-one", targets: [A, B], current: A });
    await two.agents.register({ agentId: "a-two", targets: [A, B], current: A });
    await two.agents.register({ agentId: "b-two", targets: [B, A], current: B });
    const ledger: Run[] = [];
    const handler = (by: string) => async (task: { index: number }, ctx: { target: string | undefined }) => {
      const start = now();
      await delay(40);
      ledger.push({ target: ctx.target, by, start, end: now() });
      return task.index;
    };
    const workers = [
      one.workers.start({ queue: "llm", agent: "a-one", concurrency: 4, handler: handler("one") }),
      two.workers.start({ queue: "llm", agent: "a-two", concurrency: 4, handler: handler("two") }),
      two.workers.start({ queue: "llm", agent: "b-two", concurrency: 4, handler: handler("two-b") }),
    ];
    const job = await admin.jobs.submit({ queue: "llm", tasks: Array.from({ length: 48 }, (_, i) => i) });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 48, failed: 0 });
    for (const w of workers) await w.stop();
    expect(ledger).toHaveLength(48);
    const onA = ledger.filter((r) => r.target === A);
    const onB = ledger.filter((r) => r.target === B);
    // Both runtimes ran tasks on A: the cap is across them.
    expect(new Set(onA.map((r) => r.by))).toEqual(new Set(["one", "two"]));
    expect(maxOverlap(onA)).toBeLessThanOrEqual(2);
    expect(maxOverlap(onA)).toBe(2);
    // B has a pool of its own (its one worker of 4 slots held to 2), not A's: more than 2 ran at once.
    expect(maxOverlap(onB)).toBe(2);
    expect(maxOverlap(ledger)).toBeGreaterThan(2);
    if (broker === "nats") {
      // The server holds one pool per target, two permits each (and each pool's marker), all free
      // again: 2 pools, filled once although two runtimes each used A's first.
      const jsm = await jetstreamManager(raw);
      const { state } = await jsm.streams.info("jetstate_tpermits_llm");
      expect({ messages: state.messages, subjects: state.num_subjects }).toEqual({
        messages: 6,
        subjects: 4,
      });
    }
  });

  it("perTarget.ratePerSecond: 5 bounds each target's starts in every 1-second window across two runtimes", async () => {
    const [admin, one, two] = [await runtime("admin-r"), await runtime("one-r"), await runtime("two-r")];
    await admin.queues.configure("llm-rate", { perTarget: { ratePerSecond: 5 } });
    await one.agents.register({ agentId: "r-one", targets: [A], current: A });
    await two.agents.register({ agentId: "r-two", targets: [A], current: A });
    const starts: number[] = [];
    const handler = (task: { index: number }) => {
      starts.push(now());
      return task.index;
    };
    const workers = [
      one.workers.start({ queue: "llm-rate", agent: "r-one", concurrency: 4, handler }),
      two.workers.start({ queue: "llm-rate", agent: "r-two", concurrency: 4, handler }),
    ];
    const job = await admin.jobs.submit({
      queue: "llm-rate",
      tasks: Array.from({ length: 12 }, (_, i) => i),
    });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 12 });
    for (const w of workers) await w.stop();
    starts.sort((a, b) => a - b);
    const most = mostStartsPerSecond(starts);
    expect(most).toBeLessThanOrEqual(5);
    expect((starts.at(-1) as number) - (starts[0] as number)).toBeGreaterThanOrEqual(2000);
  });

  it("bad per-target limits are refused naming the field, and nothing is stored", async () => {
    const admin = await runtime("admin-bad");
    for (const [limits, field] of [
      [{ perTarget: { maxConcurrency: 0 } }, "limits.perTarget.maxConcurrency"],
      [{ perTarget: { ratePerSecond: 1.5 } }, "limits.perTarget.ratePerSecond"],
      [{ perTarget: { cap: 2 } }, "limits.perTarget.cap"],
      [{ perTarget: 3 }, "limits.perTarget"],
    ] as const) {
      await expect(admin.queues.configure("llm-bad", limits as never)).rejects.toMatchObject({
        _tag: "InvalidArgument",
        field,
      });
    }
    expect(await admin.queues.list()).not.toContainEqual(expect.objectContaining({ queue: "llm-bad" }));
  });

  it("a changed per-target limit makes new pools; lifting it leaves targets unlimited", async () => {
    const [admin, one] = [await runtime("admin-c"), await runtime("one-c")];
    await admin.queues.configure("llm2", { perTarget: { maxConcurrency: 1 } });
    const before = (await admin.queues.get("llm2")).perTarget?.round;
    await admin.queues.configure("llm2", { perTarget: { maxConcurrency: 3 } });
    const after = await admin.queues.get("llm2");
    expect(after.perTarget?.maxConcurrency).toBe(3);
    expect(after.perTarget?.round).not.toBe(before);
    await admin.queues.configure("llm2", { perTarget: null });
    expect((await admin.queues.get("llm2")).perTarget).toBeUndefined();
    await one.agents.register({ agentId: "c-one", targets: [A], current: A });
    const ledger: Run[] = [];
    const worker = one.workers.start({
      queue: "llm2",
      agent: "c-one",
      concurrency: 4,
      handler: async (task: { index: number }, ctx: { target: string | undefined }) => {
        const start = now();
        await delay(40);
        ledger.push({ target: ctx.target, by: "one", start, end: now() });
        return task.index;
      },
    });
    const job = await admin.jobs.submit({ queue: "llm2", tasks: Array.from({ length: 12 }, (_, i) => i) });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 12 });
    await worker.stop();
    expect(maxOverlap(ledger)).toBeGreaterThan(1);
  });
});
