/**
 * `rt.stop()` while an operation is in its retries: Effect's `tryPromise`
 * let go of the attempt at the stop's abort, the connection drained under
 * it, and what it did last (a bucket scan's delete of its consumer) failed,
 * leaving the consumer on the server (an ordered consumer on the leases
 * bucket after a clean stop, in the five-processes test). Oracle: the
 * consumers the server lists after the stop, read by a client of the test's own.
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { beforeAll, describe, expect, it } from "vitest";
import { scanBucketEntries } from "../../src/adapters/nats/bucket-reads.ts";
import { createRuntime, partsOf } from "../../src/api/runtime.ts";
import { TransientBrokerError } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { waitUntil } from "../harness/wait.ts";

/** Keys enough for a scan that lasts past the stop's start (about a second here). */
const keys = 20_000;

describe("rt.stop() with an operation in its retries", () => {
  const held = useServerConnection();
  beforeAll(async () => {
    const kv = await new Kvm(held.nc).create("big", { history: 1 });
    for (let i = 0; i < keys; i += 1000)
      await Promise.all(Array.from({ length: 1000 }, (_, k) => kv.put(`k${i + k}`, "x".repeat(64))));
  });

  it("waits for it before the connection drains: the scan it runs deletes its consumer", async () => {
    const { server, nc } = held;
    const jsm = await jetstreamManager(nc);
    const consumers = async () => (await jsm.consumers.list("KV_big").next()).map((c) => c.name);
    const rt = await createRuntime({ servers: server.url, logger: silentLogger(), roles: ["worker"] });
    let attempts = 0;
    let scanEnded = false;
    const scanning = partsOf(rt)
      .core.run(
        "test.scan",
        async (client) => {
          // Failed once: the next attempt runs in the Effect program of the retries.
          if (++attempts === 1) throw new TransientBrokerError({ message: "once", operation: "test.scan" });
          return scanBucketEntries(jetstream(client), await jetstreamManager(client), "big").finally(() => {
            scanEnded = true;
          });
        },
        { retry: { attempts: 3, initialDelayMs: 10 } },
      )
      .catch((error: unknown) => error);
    await waitUntil(async () => (await consumers()).length > 0, {
      timeoutMs: 10_000,
      message: "the scan's consumer on the server",
    });
    // Stopped in the scan of the second attempt, the one the retries' Effect program runs.
    expect({ attempts, scanEnded }).toEqual({ attempts: 2, scanEnded: false });
    await rt.stop();
    await scanning;
    expect(await consumers()).toEqual([]);
  });
});
