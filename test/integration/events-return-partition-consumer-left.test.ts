/**
 * Review test: `rt.jobs.events()`'s `return()` while the reader's connection
 * is partitioned without a reset (packets lost, no RST: the client still
 * counts itself connected until its pings go unanswered, 30 s × 2 by
 * default). Commit 7476793 says a consumer whose delete the server did not
 * answer is "tried again in the background until it is answered, for up to
 * the consumer's 60 s" (NatsJobBroker.dropConsumerLater, architecture.md
 * "Job events"). It is run with the runtime's default retry policy (3
 * attempts), and the connection reads as connected throughout, so each
 * attempt waits out the 5 s request timeout: the retry gives up about 16 s
 * after it started, long before the 60 s, and the consumer is left on the
 * server after the client reconnects, as before the fix.
 *
 * Oracle: the reader's `events_…` consumers on `KV_jetstate_jobs`, read on a
 * connection of the test's own that is never cut. The link heals (the sockets
 * through the proxy are dropped and the client reconnects at once) 25 s
 * after `return()` began: well inside the 60 s the commit promises.
 */
import net from "node:net";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

/** A loopback proxy whose `hole` drops every byte both ways, sockets left open (a partition, no RST). */
const blackholeProxy = async (target: string) => {
  const { hostname, port } = new URL(target);
  const state = { hole: false };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    client.on("data", (d) => {
      if (!state.hole) upstream.write(d);
    });
    upstream.on("data", (d) => {
      if (!state.hole) client.write(d);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const destroyAll = () => {
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  };
  return {
    url: `nats://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    state,
    /** The partition heals as a client sees it once it gives the old socket up: new sockets pass. */
    heal: () => {
      state.hole = false;
      destroyAll();
    },
    close: () =>
      new Promise<void>((resolve) => {
        destroyAll();
        server.close(() => resolve());
      }),
  };
};

describe("an events reader ended while its connection is partitioned (no reset)", () => {
  let server: NatsServerHandle;
  let proxy: Awaited<ReturnType<typeof blackholeProxy>>;
  let submitter: Runtime;
  let reader: Runtime;
  beforeAll(async () => {
    server = await startNatsServer();
    proxy = await blackholeProxy(server.url);
    submitter = await createRuntime({ servers: server.url, logger: silentLogger(), roles: ["submitter"] });
    reader = await createRuntime({ servers: proxy.url, logger: silentLogger(), roles: ["submitter"] });
  });
  afterAll(async () => {
    await reader?.stop();
    await submitter?.stop();
    await proxy?.close();
    await server?.dispose();
  });

  const readerConsumers = async () => {
    const nc = await connect({ servers: server.url, name: "raw-consumers" });
    try {
      const jsm = await jetstreamManager(nc);
      return (await jsm.consumers.list("KV_jetstate_jobs").next())
        .map((c) => c.name)
        .filter((name) => name.startsWith("events_"));
    } finally {
      await nc.close();
    }
  };

  it("its consumer is gone once the connection is back, within the 60 s", { timeout: 90_000 }, async () => {
    await submitter.jobs.submit({ queue: "hole", tasks: [1] });
    const events = reader.jobs.events();
    const reading = (async () => {
      for await (const _ of events) {
        // read and drop
      }
    })();
    await events.ready;
    expect(await readerConsumers()).toHaveLength(1);

    const cutAt = Date.now();
    proxy.state.hole = true;
    // return() resolves after ~5 s (its delete timed out); the background delete starts then.
    await events.return();
    await reading;
    await new Promise((resolve) => setTimeout(resolve, 25_000 - (Date.now() - cutAt)));
    // The premise: the client never noticed (its pings are 30 s apart), so every try was made.
    expect(reader.connection.state).toBe("connected");

    proxy.heal();
    await waitUntil(async () => (await readerConsumers()).length === 0 || Date.now() - cutAt > 42_000, {
      timeoutMs: 20_000,
      message: "the consumer deleted, or 42 s since the cut",
    });
    // Got: ["events_<random>_1"], 17 s after the heal (the retry gave up ~21 s after the cut, after its
    // 3 attempts of 5 s each); removed by the server only at its 60 s inactive threshold.
    expect({ left: await readerConsumers(), sinceCutMs: Date.now() - cutAt < 55_000 }).toEqual({
      left: [],
      sinceCutMs: true,
    });
  });
});
