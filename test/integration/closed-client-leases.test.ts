/**
 * Tasks running when the runtime's NATS client is replaced (`rt.connection.reset()`,
 * or the client giving up its reconnects and the connection actor making a new
 * one). Their deliveries belong to the closed client. A review took every answer
 * to one (a lease kept from a timer, an ack after a settled publish) for a throw
 * that would end the process: nats.js's `publish` throws on a closed client, but
 * a delivery is answered through its protocol handler, which does not. This
 * guards it: with `working()` made to throw, the keeper's timer ends the process
 * (Node's `uncaughtException`). The oracles: the process's own
 * `uncaughtException` and `unhandledRejection` events, the handler's runs, and
 * the job's end.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, gate, waitUntil, within } from "../harness/wait.ts";

describe("tasks running when the client is replaced", () => {
  let server: NatsServerHandle;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server?.dispose();
  });

  it.each([false, true])(
    "keep their leases and answer without ending the process (lane %s)",
    async (lane) => {
      const crashes: unknown[] = [];
      const onCrash = (error: unknown) => crashes.push(error);
      process.on("uncaughtException", onCrash);
      process.on("unhandledRejection", onCrash);
      const rt = await createRuntime({ servers: server.url, logger: silentLogger() });
      const release = gate();
      let started = 0;
      const worker = rt.workers.start<number, number>({
        queue: `closed_${lane}`,
        concurrency: 4,
        handler: async (task) => {
          started++;
          await release.opened;
          return task.payload;
        },
      });
      try {
        const job = await rt.jobs.submit({ queue: `closed_${lane}`, tasks: [1, 2], lane, ackWaitMs: 300 });
        await waitUntil(() => started === 2, { timeoutMs: 10_000, message: "both tasks running" });
        await rt.connection.reset();
        // Several lease keeps (every 100 ms) on the closed client's deliveries.
        await delay(500);
        release.open();
        // Their acks go to the closed client: the tasks run again on the new one, and the job ends.
        expect(await within(job.done(), 20_000)).toMatchObject({ status: "succeeded", done: 2 });
        // Run again on the new client: the first runs' answers went to the closed one. (At least:
        // on a busy machine a run on the new client may outlast the 300 ms ack wait once more.)
        expect(started).toBeGreaterThanOrEqual(4);
        await delay(100);
        expect(crashes).toEqual([]);
      } finally {
        release.open();
        await worker.stop();
        await rt.stop();
        process.off("uncaughtException", onCrash);
        process.off("unhandledRejection", onCrash);
      }
    },
    60_000,
  );
});
