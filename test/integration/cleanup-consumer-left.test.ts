/**
 * Review of 49afd07 (the cleanup report names only what was removed): the
 * same pass still names in `consumersDeleted` every consumer it tried, one
 * whose delete failed included (`.catch(() => undefined)`). Here a job's
 * leftover consumer (its job unknown: no record) whose delete the server
 * does not answer: the report says it was deleted, and the server still
 * holds it. Oracle: the consumer read raw from the server.
 */
import { JetStreamApiCodes, JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { createRuntime, type Runtime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

let server: NatsServerHandle;
let rt: Runtime;
let nc: NatsConnection;
beforeAll(async () => {
  server = await startNatsServer();
  rt = await createRuntime({ servers: server.url, logger: silentLogger(), jobs: { cleanupIntervalMs: 0 } });
  nc = await connect({ servers: server.url });
});
afterAll(async () => {
  vi.restoreAllMocks();
  await nc?.close();
  await rt?.stop();
  await server?.dispose();
});

it("a consumer whose delete failed is not reported deleted", async () => {
  const queue = "left-consumer";
  const worker = rt.workers.start<number, number>({ queue, handler: (task) => task.payload });
  const job = await rt.jobs.submit<number, number>({ queue, tasks: [1] });
  expect(await job.done()).toMatchObject({ status: "succeeded" });
  await worker.stop();
  const jsm = await jetstreamManager(nc);
  const stream = `jetstate_tasks_${queue}`;
  const orphan = "jorphan0000000000000000000000000";
  await jsm.consumers.add(stream, {
    durable_name: orphan,
    ack_policy: "explicit" as never,
    filter_subject: `jetstate.tasks.${queue}.${orphan}`,
  });
  // The server does not answer this consumer's delete (nats.js's ConsumerAPI, shared by the runtime's).
  const proto = Object.getPrototypeOf(jsm.consumers) as {
    delete: (s: string, n: string) => Promise<boolean>;
  };
  const real = proto.delete;
  const spy = vi.spyOn(proto, "delete").mockImplementation(function (this: unknown, s: string, n: string) {
    if (n === orphan) return Promise.reject(new Error(`injected: consumer ${n} not deleted`));
    return real.call(this, s, n);
  });
  const report = await rt.admin.cleanup();
  const tried = spy.mock.calls.some(([, n]) => n === orphan);
  spy.mockRestore();
  expect(tried).toBe(true);
  const still = await jsm.consumers.info(stream, orphan).then(
    () => true,
    (e: unknown) => {
      if (e instanceof JetStreamApiError && e.code === JetStreamApiCodes.ConsumerNotFound) return false;
      throw e;
    },
  );
  expect(still).toBe(true);
  expect(report.consumersDeleted).not.toContain(orphan);
});
