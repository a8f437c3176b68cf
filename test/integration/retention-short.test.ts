/**
 * A retention shorter than JetStream's two-minute duplicate window
 * (`jobs.retentionMs`, the results stream's max age): the stream is still
 * made, and jobs run. The server refused it ("duplicates window can not be
 * larger then max age") and every job hung with nothing said. The oracle is
 * the server's own stream info, read through the test's connection.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import type { Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { useNatsRuntime } from "../harness/runtime.ts";

describe("a retention shorter than the duplicate window", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  const retentionMs = 3_000;
  useNatsRuntime(
    { name: "short", logger: silentLogger(), jobs: { retentionMs, cleanupIntervalMs: 0 } },
    (started) => {
      ({ server, rt } = started);
    },
  );

  it("makes the results stream with that max age, and a job runs to its end", async () => {
    const worker = rt.workers.start<number, number>({ queue: "short", handler: (t) => t.payload * 2 });
    onTestFinished(() => worker.stop());
    const job = await rt.jobs.submit<number, number>({ queue: "short", tasks: [1, 2] });
    expect(await job.done()).toMatchObject({ status: "succeeded" });
    const nc = await connect({ servers: server.url });
    onTestFinished(() => nc.close());
    const results = await (await jetstreamManager(nc)).streams.info("jetstate_results");
    expect(results.config.max_age).toBe(retentionMs * 1_000_000);
    expect(results.config.duplicate_window).toBeLessThanOrEqual(results.config.max_age);
  });
});
