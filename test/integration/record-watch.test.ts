/**
 * The job-record watch every runtime with a job role runs (`watchRecords`:
 * one per runtime for its job actors, one per worker runtime) is a consumer
 * on the records bucket's stream. A runtime that stops must take it away: a
 * consumer left behind stays on the server until it expires, one per
 * runtime that ever started (seen in test/integration/jobs-five-processes.test.ts:
 * every cleanly stopped process left its watch). The oracle is the server's
 * consumer list, read with a manager of the test's own.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Role } from "../../src/api/permissions.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const recordsStream = "KV_jetstate_jobs";

describe("the job-record watch on NATS", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url, name: "record-watch-test" });
  });
  afterAll(async () => {
    await nc?.close();
    await server?.dispose();
  });

  const consumers = async () => {
    const jsm = await jetstreamManager(nc);
    const names: string[] = [];
    try {
      for await (const c of jsm.consumers.list(recordsStream)) names.push(c.name);
    } catch (error) {
      if ((error as { code?: number }).code === 10059) return names;
      throw error;
    }
    return names;
  };

  it.each<{ roles: Role[]; watches: number }>([
    { roles: ["submitter"], watches: 1 },
    { roles: ["supervisor"], watches: 1 },
    { roles: ["worker"], watches: 1 },
    { roles: ["submitter", "supervisor", "worker", "admin"], watches: 2 },
  ])(
    "a runtime with roles $roles takes its watch consumers away when it stops",
    async ({ roles, watches }) => {
      const before = await consumers();
      const rt = await createRuntime({
        servers: server.url,
        logger: silentLogger(),
        roles,
        jobs: { cleanupIntervalMs: 0 },
      });
      const worker = roles.includes("worker")
        ? rt.workers.start({ queue: "watched", handler: () => 1 })
        : undefined;
      // Its watches are up: the server lists them (the runtime's loops start them at once).
      await waitUntil(async () => (await consumers()).length >= before.length + watches, {
        timeoutMs: 10_000,
        message: `${watches} watch consumers on ${recordsStream}`,
      });
      await worker?.stop();
      await rt.stop();
      expect(await consumers()).toEqual(before);
    },
  );
});
