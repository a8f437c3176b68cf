/**
 * A worker stopped while its server is away: its stop does not wait for the
 * server consumer deletes of its watches, which nats.js would hold until
 * they time out (5 s each). Oracle: the test's own clock around `stop()`;
 * the server is killed by the test, and the runtime's own log says when its
 * connection saw it go.
 */

import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

describe("a worker stopped while its server is away", () => {
  let server: NatsServerHandle;
  let rt: Runtime | undefined;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await rt?.stop();
    await server?.dispose();
  });

  it("stops within a second, without waiting for deletes the server cannot answer", async () => {
    let connection = "idle";
    const logger = pino(
      { level: "info" },
      {
        write: (line: string) => {
          const { actor, state } = JSON.parse(line) as { actor?: string; state?: string };
          if (actor === "connection" && state) connection = state;
        },
      },
    );
    rt = await createRuntime({ servers: server.url, logger });
    const worker = rt.workers.start({ queue: "away", handler: () => "ok" });
    // Its watches are up: a job of the queue runs through it.
    const job = await rt.jobs.submit({ queue: "away", tasks: [1] });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
    await server.kill();
    await waitUntil(() => connection !== "connected", {
      timeoutMs: 10_000,
      message: "the runtime to see its server gone",
    });
    const started = performance.now();
    await worker.stop();
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
