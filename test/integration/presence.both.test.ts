/**
 * Who serves the queues (issue #18): `rt.workers.list()` and `rt.agents.list()`
 * read from another runtime, on the memory broker (runtimes sharing one
 * memory server) and on NATS (runtimes on one nats-server). The oracles are
 * what the test started (its workers' options, its handlers' ledger) and,
 * for a worker killed with SIGKILL, the raw presence key read by the test's
 * own KV client: still stored when the list drops it, so the list dropped it
 * by its time to live and not because anything withdrew it.
 */
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import type { WorkerInfo } from "../../src/kernel/presence.ts";
import { startChild } from "../harness/child-processes.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { memoryPool, natsPool, type RuntimePool } from "../harness/runtime-pools.ts";
import { waitUntil } from "../harness/wait.ts";

/** Long enough that a stopped worker gone within `withdrawnWithinMs` was withdrawn, not run out. */
const presenceMs = 3_000;
const withdrawnWithinMs = 1_500;
/** For the worker killed with SIGKILL: its announcement runs out soon. */
const crashPresenceMs = 900;

type Backend = RuntimePool;

const memoryBackend = (): Backend => memoryPool({ presenceMs });
const natsBackend = (server: NatsServerHandle): Backend => natsPool(server.url, { presenceMs });

let nats: NatsServerHandle;
beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.dispose();
});

const backends: Array<{ name: string; make(): Backend }> = [
  { name: "memory", make: memoryBackend },
  { name: "nats", make: () => natsBackend(nats) },
];

/** The fields a worker's options and the test's own ledger decide, of each listed worker. */
const shapeOf = (w: WorkerInfo) => ({
  id: w.id,
  runtime: w.runtime,
  queue: w.queue,
  concurrency: w.concurrency,
  agent: w.agent,
  target: w.target,
});

describe.each(backends)("presence on $name", ({ make }) => {
  let backend: Backend;
  beforeAll(() => {
    backend = make();
  });
  afterAll(async () => {
    await backend.stop();
  });

  it("another runtime lists every live worker, with what it answered, and none after it stopped", async () => {
    const [a, b] = [await backend.runtime("rt-a"), await backend.runtime("rt-b")];
    await a.agents.register({ agentId: "gpu-1", targets: ["east", "west"], current: "east" });
    const ran: string[] = [];
    const plain = a.workers.start({
      queue: "resize",
      concurrency: 2,
      handler: (task) => {
        ran.push(task.id);
        return "ok";
      },
    });
    const bound = a.workers.start({ queue: "detect", concurrency: 5, agent: "gpu-1", handler: () => "ok" });
    const expected = [
      { id: bound.id, runtime: "rt-a", queue: "detect", concurrency: 5, agent: "gpu-1", target: "east" },
      { id: plain.id, runtime: "rt-a", queue: "resize", concurrency: 2, agent: undefined, target: undefined },
    ];
    await waitUntil(async () => (await b.workers.list()).length === 2, {
      timeoutMs: 5_000,
      message: "both workers listed by the other runtime",
    });
    expect((await b.workers.list()).map(shapeOf)).toEqual(expected);
    expect((await b.workers.list({ queue: "resize" })).map((w) => w.id)).toEqual([plain.id]);
    const listed = (await b.workers.list({ queue: "resize" }))[0];
    expect(listed?.pid).toBe(process.pid);
    expect(listed?.version).toMatch(/^\d+\.\d+\.\d+/);

    // What a worker answered shows in its next announcement: as many as its handler ran.
    const job = await b.jobs.submit({ queue: "resize", tasks: [1, 2, 3, 4, 5] });
    await job.done();
    await waitUntil(async () => (await b.workers.list({ queue: "resize" }))[0]?.processed === 5, {
      timeoutMs: 5_000,
      message: "5 processed in the worker's announcement",
    });
    expect(ran).toHaveLength(5);

    await plain.stop();
    await waitUntil(async () => (await b.workers.list()).length === 1, {
      timeoutMs: withdrawnWithinMs,
      message: "a stopped worker withdrawn",
    });
    expect((await b.workers.list()).map((w) => w.id)).toEqual([bound.id]);
    await bound.stop();
  });

  it("another runtime lists the agents with their current target and switches", async () => {
    const [a, b] = [await backend.runtime("rt-c"), await backend.runtime("rt-d")];
    await a.agents.register({ agentId: "cam-7", targets: ["a", "b", "c"], current: "a" });
    await a.agents.reportFailure("cam-7", { target: "a", error: new Error("boom") });
    const listed = (await b.agents.list()).find((x) => x.agentId === "cam-7");
    expect(listed).toMatchObject({ agentId: "cam-7", current: "b", switches: 1 });
    expect(listed?.skips.map((s) => s.target)).toEqual(["a"]);
  });

  it("rejects a bad query with a typed error naming the field", async () => {
    const rt = await backend.runtime("rt-e");
    await expect(rt.workers.list({ queue: "a.b" })).rejects.toMatchObject({
      name: "InvalidArgument",
      field: "queue",
    });
    await expect(rt.workers.list({ queu: "x" } as never)).rejects.toMatchObject({ name: "InvalidArgument" });
  });
});

describe("presence on nats: a worker whose process died", () => {
  let kvClient: NatsConnection;
  beforeAll(async () => {
    kvClient = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    await kvClient?.close();
  });

  it("leaves the list once its last announcement ran out, its key still stored", async () => {
    const rt = await createRuntime({
      servers: nats.url,
      name: "reader",
      presenceMs: crashPresenceMs,
      logger: silentLogger(),
    });
    try {
      const child = startChild("presence-worker", process.cwd(), "test/fixtures/presence-worker.ts", [
        nats.url,
        "crash",
        String(crashPresenceMs),
      ]);
      const ready = await child.waitFor((l) => l.event === "ready", "worker ready");
      const workerId = String(ready.workerId);
      await waitUntil(
        async () => (await rt.workers.list({ queue: "crash" })).some((w) => w.id === workerId),
        {
          timeoutMs: 10_000,
          message: "the child's worker listed",
        },
      );
      const listed = (await rt.workers.list({ queue: "crash" })).find((w) => w.id === workerId);
      expect(listed).toMatchObject({ runtime: "presence-child", concurrency: 3, pid: child.pid });
      await child.kill("SIGKILL");
      const killedAt = Date.now();
      await waitUntil(async () => (await rt.workers.list({ queue: "crash" })).length === 0, {
        timeoutMs: crashPresenceMs + 3_000,
        message: "the killed worker gone from the list",
      });
      // Gone within its time to live of the kill (its last announcement was written before it).
      expect(Date.now() - killedAt).toBeLessThan(crashPresenceMs + 1_000);
      const kv = await new Kvm(kvClient).open("jetstate_presence");
      const stored = await kv.get(`worker.${workerId}`);
      expect(stored?.operation).toBe("PUT");
    } finally {
      await rt.stop();
    }
  });

  it("goes by the store's time, not the announcing host's clock: an hour off either way changes nothing", async () => {
    const rt = await createRuntime({
      servers: nats.url,
      name: "skew-reader",
      presenceMs: crashPresenceMs,
      logger: silentLogger(),
    });
    try {
      // Two workers of hosts whose clocks are an hour ahead and an hour behind, written raw.
      const kv = await new Kvm(kvClient).open("jetstate_presence");
      const announce = (id: string, seenAt: number) =>
        kv.put(
          `worker.${id}`,
          JSON.stringify({
            id,
            runtime: "skewed",
            queue: "skew",
            concurrency: 1,
            inFlight: 0,
            processed: 0,
            failed: 0,
            version: "0.3.0",
            host: "elsewhere",
            pid: 1,
            startedAt: seenAt,
            seenAt,
            presenceMs: crashPresenceMs,
          }),
        );
      const written = Date.now();
      await announce("ahead", written + 3_600_000);
      await announce("behind", written - 3_600_000);
      // Just written: both stand (the one behind would be long gone by its own clock)...
      expect((await rt.workers.list({ queue: "skew" })).map((w) => w.id)).toEqual(["ahead", "behind"]);
      // ...and both run out once presenceMs has passed since the store wrote them (the one ahead
      // would stand another hour by its own clock).
      await waitUntil(async () => (await rt.workers.list({ queue: "skew" })).length === 0, {
        timeoutMs: crashPresenceMs + 3_000,
        message: "both run out by the store's time",
      });
      expect(Date.now() - written).toBeGreaterThanOrEqual(crashPresenceMs - 50);
    } finally {
      await rt.stop();
    }
  });
});
