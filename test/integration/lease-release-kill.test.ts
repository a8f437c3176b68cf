/**
 * A lease released by its sequence is a delete without erasure, which
 * nats-server 2.9 does not make durable at once: a server killed (SIGKILL)
 * right after comes back with those leases, each naming a runtime still
 * up. Its takeover pass removes them (a lease naming it that it does not
 * hold, of a job over), so the bucket is back to the jobs not over. The
 * oracle: the leases' stream read raw, key by key.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { untilJetStreamAnswers } from "../harness/raw-results.ts";
import { useNatsRuntime } from "../harness/runtime.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const leaseMs = 1000;
const bucket = brokerNames("jetstate").leasesBucket;
const jobs = 300;

describe("leases released by sequence, brought back by a server killed right after", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let oracle: NatsConnection;
  useNatsRuntime({ name: "holder", logger, jobs: { leaseMs, cleanupIntervalMs: 0 } }, (started) => {
    ({ server, rt } = started);
  });
  beforeAll(async () => {
    oracle = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  });
  afterAll(async () => {
    await oracle?.close();
  });

  /** The jobs' leases stored (heartbeats left out), read raw. */
  const storedLeases = async (): Promise<number> => {
    const jsm = await jetstreamManager(oracle);
    const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: ">" });
    return Object.keys(info.state.subjects ?? {}).filter((s) => !s.startsWith(`$KV.${bucket}.heartbeat.`))
      .length;
  };

  /** `jobs` 1-task jobs run through, 64 in flight. */
  const runJobs = async () => {
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < jobs) {
          const job = await rt.jobs.submit<number, number>({ queue: "kill", tasks: [next++] });
          expect(await job.done()).toMatchObject({ status: "succeeded" });
        }
      }),
    );
  };

  /** The server killed and started again on its store; resolves once the oracle is back on it. */
  const killAndRestart = async () => {
    await server.kill();
    await server.restart();
    await untilJetStreamAnswers(oracle);
  };

  it("are removed by the holder's takeover pass", async (ctx) => {
    const worker = rt.workers.start<number, number>({
      queue: "kill",
      concurrency: 64,
      handler: (t) => t.payload,
    });
    // Killed right after the last job's end. Whether deletes come back depends on whether the
    // server wrote them down before it died (76 of 300 in one round here, none in others): up to
    // five rounds, and without any the test says nothing (skipped, not passed).
    let back = 0;
    for (let round = 0; round < 5 && back === 0; round++) {
      await runJobs();
      await killAndRestart();
      back = await storedLeases();
    }
    await worker.stop();
    if (back === 0) ctx.skip();
    await waitUntil(async () => (await storedLeases()) === 0, {
      timeoutMs: 6 * leaseMs + 5000,
      message: `the ${back} leases back after the kill removed`,
    });
  }, 90_000);
});
