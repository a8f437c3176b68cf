/**
 * The one supervised connection against a real nats-server (issue #3): one
 * client whatever the number of operations, operations that wait for the
 * connection within their deadline, retries only where a retry can help, and
 * a stop() that leaves nothing behind.
 */
import { getEventListeners } from "node:events";
import http from "node:http";
import { jetstream, jetstreamManager, type PubAck } from "@nats-io/jetstream";
import { TimeoutError } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { waitFor } from "xstate";
import type { ConnectionOptions } from "../../src/api/connection-options.ts";
import { createRuntime, partsOf } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import {
  ConnectionUnavailable,
  OperationTimeout,
  PermanentBrokerError,
  RuntimeStopped,
} from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import type { ConnectionState } from "../../src/machines/connection.machine.ts";
import { connectionStateName } from "../../src/machines/connection.machine.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

type Core = Awaited<ReturnType<typeof createRuntimeCore>>;

/** Lets pending promise callbacks run (one macrotask), without waiting for any time to pass. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("the runtime's connection on a real nats-server", () => {
  let server: NatsServerHandle;
  let down = false;
  const cores: Core[] = [];

  beforeAll(async () => {
    server = await startNatsServer();
  });
  // A failed test must not leave a client or a dead server to the next one.
  afterEach(async () => {
    await Promise.all(cores.splice(0).map((core) => core.stop()));
    if (down) await restart();
  });
  afterAll(async () => {
    await server?.dispose();
  });

  const kill = async () => {
    down = true;
    await server.kill();
  };
  const restart = async () => {
    await server.restart();
    down = false;
  };

  const open = async (connection: ConnectionOptions = {}): Promise<Core> => {
    if (down) await restart();
    const core = await createRuntimeCore({
      servers: server.url,
      name: `integration-${cores.length + 1}`,
      logger: silentLogger(),
      connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600, ...connection },
    });
    cores.push(core);
    return core;
  };

  const reach = (core: Core, state: ConnectionState) =>
    waitFor(core.connection.actor, (s) => connectionStateName(s.value) === state, { timeout: 15_000 });

  /** Connections the server has accepted since it started (/varz total_connections). */
  const totalConnections = () =>
    new Promise<number>((resolve, reject) => {
      http
        .get(`${server.monitorUrl}/varz`, { agent: false }, (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            body += chunk;
          });
          res.on("end", () => resolve((JSON.parse(body) as { total_connections: number }).total_connections));
          res.on("error", reject);
        })
        .on("error", reject);
    });

  const stop = async (core: Core) => {
    await core.stop();
    cores.splice(cores.indexOf(core), 1);
    await waitUntil(async () => (await server.connectionCount()) === 0, {
      timeoutMs: 5_000,
      message: "the server to see no connection after stop()",
    });
  };

  it("200 operations in parallel go through one connection, while and after they run", async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on("warning", onWarning);
    onTestFinished(() => {
      process.off("warning", onWarning);
    });
    const totalBefore = await totalConnections();
    const core = await open();
    // The runtime's own (its `stopLinks`, shared by every operation given a signal of its caller's).
    const listenersBefore = getEventListeners(core.stopping, "abort").length;
    const samples: number[] = [];
    let inFlight = 0;
    const sampleWhile = async (busy: () => boolean) => {
      while (busy()) samples.push(await server.connectionCount());
    };

    // 200 round trips issued before the connection exists: they all wait for the one client.
    expect(core.connection.state).toBe("connecting");
    inFlight = 200;
    const rtts = Array.from({ length: 200 }, () =>
      core
        .run("rtt", (nc) => nc.rtt())
        .finally(() => {
          inFlight--;
        }),
    );
    await Promise.all([Promise.all(rtts), sampleWhile(() => inFlight > 0)]);
    expect(Math.max(...samples), "never more than one connection").toBeLessThanOrEqual(1);

    // 200 JetStream publishes in parallel on the live connection.
    await core.run("stream.add", async (nc) =>
      (await jetstreamManager(nc)).streams.add({ name: "PARALLEL", subjects: ["parallel.>"] }),
    );
    samples.length = 0;
    inFlight = 200;
    const acks = Array.from({ length: 200 }, (_, i) =>
      core
        .run("publish", (nc) =>
          jetstream(nc).publish(`parallel.${i % 7}`, `m${i}`, { msgID: `parallel-${i}` }),
        )
        .finally(() => {
          inFlight--;
        }),
    );
    const [published] = await Promise.all([Promise.all(acks), sampleWhile(() => inFlight > 0)]);
    expect(samples.length).toBeGreaterThan(0);
    expect(
      samples.every((n) => n === 1),
      `connections while publishing: ${samples.join(",")}`,
    ).toBe(true);
    expect(published.filter((ack: PubAck) => ack.duplicate)).toEqual([]);
    expect(await server.connectionCount()).toBe(1);
    expect(await totalConnections(), "one connection ever made").toBe(totalBefore + 1);
    expect(core.connection.snapshot().generation).toBe(1);
    const info = await core.run("stream.info", async (nc) =>
      (await jetstreamManager(nc)).streams.info("PARALLEL"),
    );
    expect(info.state.messages).toBe(200);
    // Each operation listens to the runtime's stop signal while it runs, and only then.
    expect(getEventListeners(core.stopping, "abort")).toHaveLength(listenersBefore);
    expect(listenersBefore).toBeLessThanOrEqual(1);
    await settle();
    expect(warnings, "400 operations are not a listener leak").toEqual([]);
    await stop(core);
  });

  it("an operation given a signal of its caller's hands its op one that ends with the operation", async () => {
    const core = await open();
    // Connected first: an operation issued before runs as an Effect program, whose op gets that
    // program's signal (ended by its own timeout).
    await core.run("connected", (nc) => nc.rtt());
    const listenersBefore = getEventListeners(core.stopping, "abort").length;
    const caller = new AbortController();
    const seen: AbortSignal[] = [];
    for (let k = 0; k < 20; k++)
      await core.run(
        "signal",
        async (nc, signal) => {
          seen.push(signal);
          expect(signal.aborted).toBe(false);
          return nc.rtt();
        },
        { signal: caller.signal },
      );
    // Whatever the op left running (a first attempt past its deadline) is told its work is over.
    expect(seen.every((signal) => signal.aborted)).toBe(true);
    // Nothing stays linked: no listener on the caller's signal, none more on the runtime's.
    expect(getEventListeners(caller.signal, "abort")).toHaveLength(0);
    expect(getEventListeners(core.stopping, "abort")).toHaveLength(listenersBefore);
    await stop(core);
  });

  it("an operation issued while the server is down completes once it is back, stored exactly once", async () => {
    const core = await open({ retry: { attempts: 5, initialDelayMs: 50 } });
    await core.run("stream.add", async (nc) =>
      (await jetstreamManager(nc)).streams.add({ name: "WHILEDOWN", subjects: ["whiledown.>"] }),
    );
    const { generation } = core.connection.snapshot();
    await kill();
    await reach(core, "reconnecting");

    let calls = 0;
    const outcome = core.run(
      "publish",
      (nc) => {
        calls++;
        return jetstream(nc).publish("whiledown.1", "once", { msgID: "whiledown-1", timeout: 2_000 });
      },
      { timeoutMs: 20_000 },
    );
    let settled = false;
    const done = () => {
      settled = true;
    };
    outcome.then(done, done);
    await settle();
    expect(calls, "nothing is sent while there is no connection").toBe(0);
    expect(settled).toBe(false);

    await restart();
    const ack = await outcome;
    expect(ack.stream).toBe("WHILEDOWN");
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(core.connection.snapshot().generation, "the client reconnected, not replaced").toBe(generation);
    const info = await core.run("stream.info", async (nc) =>
      (await jetstreamManager(nc)).streams.info("WHILEDOWN"),
    );
    expect(info.state.messages, "no duplicate").toBe(1);
    await stop(core);
  });

  it("an operation whose deadline passes while the server is down fails with ConnectionUnavailable", async () => {
    const core = await open();
    await reach(core, "connected");
    await kill();
    await reach(core, "reconnecting");
    let calls = 0;
    const started = performance.now();
    const error = await core
      .run(
        "rtt",
        (nc) => {
          calls++;
          return nc.rtt();
        },
        { timeoutMs: 300 },
      )
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    const took = performance.now() - started;
    expect(error).toBeInstanceOf(ConnectionUnavailable);
    expect(calls, "the operation never ran").toBe(0);
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(300 + 2_000);
    await restart();
    await reach(core, "connected");
    await stop(core);
  });

  it("a permanent error fails at once, after exactly one attempt", async () => {
    const core = await open({ retry: { attempts: 3, initialDelayMs: 1_000 } });
    await reach(core, "connected");
    let calls = 0;
    const started = performance.now();
    const error = await core
      .run("streams.info", async (nc) => {
        calls++;
        return (await jetstreamManager(nc)).streams.info("no-such-stream");
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(PermanentBrokerError);
    expect((error as PermanentBrokerError).code).toBe(10059); // stream not found
    expect(calls).toBe(1);
    expect(performance.now() - started, "no retry pause").toBeLessThan(1_000);
    await stop(core);
  });

  it("a transient error is retried: twice TimeoutError then success is 3 calls; always failing stops at the budget", async () => {
    const core = await open({ retry: { attempts: 3, initialDelayMs: 10 } });
    let calls = 0;
    const value = await core.run("flaky", async () => {
      calls++;
      if (calls <= 2) throw new TimeoutError();
      return 42;
    });
    expect(value).toBe(42);
    expect(calls).toBe(3);

    let hopeless = 0;
    const error = await core
      .run("hopeless", async () => {
        hopeless++;
        throw new TimeoutError();
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(OperationTimeout);
    expect(hopeless, "attempts: 3 means 3 calls in all").toBe(3);
    await stop(core);
  });

  it("after stop(): no new sockets or timers, the server sees no connection, waiting operations end", async () => {
    type Tally = Record<string, number>;
    const tally = (): Tally => {
      const t: Tally = {};
      for (const name of process.getActiveResourcesInfo()) t[name] = (t[name] ?? 0) + 1;
      return t;
    };
    const watched = ["TCPSocketWrap", "TCPServerWrap", "Timeout"];
    // The harness's own HTTP probes close their sockets asynchronously: start from a quiet process.
    await waitUntil(() => (tally().TCPSocketWrap ?? 0) === 0, {
      timeoutMs: 5_000,
      message: "no TCP socket open before the runtime is created",
    });
    const before = tally();

    const rt = await createRuntime({
      servers: server.url,
      name: "integration-handles",
      logger: silentLogger(),
      connection: { reconnectTimeWaitMs: 100 },
    });
    await waitFor(partsOf(rt).core.connection.actor, (s) => connectionStateName(s.value) === "connected", {
      timeout: 15_000,
    });
    expect(await server.connectionCount()).toBe(1);
    await rt.stop();
    expect(rt.connection.state).toBe("closed");

    const core = await open();
    await core.run("rtt", (nc) => nc.rtt());
    await kill();
    await reach(core, "reconnecting");
    const waiting = core
      .run("rtt", (nc) => nc.rtt(), { timeoutMs: 30_000 })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    await core.stop();
    cores.splice(cores.indexOf(core), 1);
    expect(await waiting, "an operation waiting for the connection ends with the runtime").toBeInstanceOf(
      RuntimeStopped,
    );
    await restart();

    await waitUntil(async () => (await server.connectionCount()) === 0, {
      timeoutMs: 5_000,
      message: "the server to see no connection after stop()",
    });
    let after: Tally = {};
    await waitUntil(
      () => {
        after = tally();
        return watched.every((name) => (after[name] ?? 0) <= (before[name] ?? 0));
      },
      {
        timeoutMs: 5_000,
        message: `no new TCP/Timer handles after stop() (before ${JSON.stringify(before)})`,
      },
    ).catch((error: Error) => {
      throw new Error(`${error.message}; after ${JSON.stringify(after)}`);
    });
  });
});
