/**
 * `rt.jobs.events()`'s `return()` (a `break`) while the reader's process is
 * cut off from the server: its consumer is gone once the connection is back.
 * Found by a review: the reader's round ended, its one delete of the consumer
 * (`readChanges` in adapters/nats/record-changes.ts) timed out after 5 s
 * while the connection was down, was logged at debug and never tried again:
 * the process lived on, reconnected within a second, and the `events_…`
 * consumer stayed on `KV_jetstate_jobs` until the server's inactive threshold
 * (60 s) removed it. It is now deleted in the background, tried again until
 * the server answers (`NatsJobBroker.dropConsumerLater`): `return()` leaves
 * nothing on the server (jobs-face, architecture.md "Job events"); only a
 * process that died leaves its consumer to expire. The server and the
 * submitting runtime are never cut off; only the reader's runtime, through a
 * TCP proxy on loopback.
 *
 * A second review: through a partition with no reset (packets lost, no RST:
 * the client still counts itself connected until its pings go unanswered,
 * 30 s × 2 by default), each try of the delete waits out its 5 s request
 * timeout, and with the runtime's default three attempts the retry gave up
 * ~16 s after it started, long before the 60 s: the consumer was left after
 * the client reconnected. The link heals (the sockets through the proxy are
 * dropped and the client reconnects at once) 25 s after `return()` began.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { tcpProxy } from "../harness/tcp-proxy.ts";
import { waitUntil } from "../harness/wait.ts";

describe("an events reader ended while its process is cut off from the server", () => {
  let server: NatsServerHandle;
  let proxy: Awaited<ReturnType<typeof tcpProxy>>;
  let submitter: Runtime;
  let reader: Runtime;
  beforeAll(async () => {
    server = await startNatsServer();
    proxy = await tcpProxy(server.url);
    submitter = await createRuntime({ servers: server.url, logger: silentLogger(), roles: ["submitter"] });
    reader = await createRuntime({ servers: proxy.url, logger: silentLogger(), roles: ["submitter"] });
  });
  afterAll(async () => {
    await reader?.stop();
    await submitter?.stop();
    await proxy?.close();
    await server?.dispose();
  });

  /** The events readers' consumers on the records bucket's stream, read raw on a connection of its own. */
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

  /** The reader's events read and dropped, its consumer in place (the records bucket made by a job of `queue`). */
  const readerStarted = async (queue: string) => {
    await submitter.jobs.submit({ queue, tasks: [1] });
    const events = reader.jobs.events();
    const reading = (async () => {
      for await (const _ of events) {
        // read and drop
      }
    })();
    await events.ready;
    expect(await readerConsumers()).toHaveLength(1);
    return { events, reading };
  };

  it("its consumer is gone once the connection is back", { timeout: 30_000 }, async () => {
    const { events, reading } = await readerStarted("cut");

    proxy.cut();
    // return() resolves (after ~5 s, its delete timed out); the iterator is done.
    await events.return();
    await reading;
    proxy.restore();
    await waitUntil(() => reader.connection.state === "connected", {
      timeoutMs: 10_000,
      message: "the reader's runtime connected again",
    });
    // Gone well before the server's own 60 s expiry (before the fix: ["events_<random>_1"], still
    // there 5 s after the reconnect, gone only ~60 s after the cut).
    await waitUntil(async () => (await readerConsumers()).length === 0, {
      timeoutMs: 15_000,
      message: "the reader's consumer deleted once the connection was back",
    });
  });

  it("through a partition with no reset, its consumer is gone once the link heals, within the 60 s", {
    timeout: 90_000,
  }, async () => {
    const { events, reading } = await readerStarted("hole");

    const cutAt = Date.now();
    proxy.drop("both");
    // return() resolves after ~5 s (its delete timed out); the background delete starts then.
    await events.return();
    await reading;
    await new Promise((resolve) => setTimeout(resolve, 25_000 - (Date.now() - cutAt)));
    // The premise: the client never noticed (its pings are 30 s apart), so every try was made.
    expect(reader.connection.state).toBe("connected");

    proxy.reset();
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
