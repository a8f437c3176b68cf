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

  it("its consumer is gone once the connection is back", { timeout: 30_000 }, async () => {
    // The records bucket exists once a job was submitted.
    await submitter.jobs.submit({ queue: "cut", tasks: [1] });
    const events = reader.jobs.events();
    const reading = (async () => {
      for await (const _ of events) {
        // read and drop
      }
    })();
    await events.ready;
    expect(await readerConsumers()).toHaveLength(1);

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
});
