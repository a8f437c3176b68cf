/**
 * A runtime that takes no job over (`jobs.takeOver: false`, or no
 * `supervisor` role) still supervises the jobs it submitted: once the
 * server was away for longer than its leases (its renewals failed), it takes
 * its own leases back. It did not: the lease its submit took was renewed by
 * its heartbeat, never by the job's actor, which then counted it as none of
 * its own, and its job went on with no progress written (nor a stall, nor a
 * lost-task check) until its end. The oracle: the job's record read raw.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { rawJobRecord } from "../harness/raw-job-records.ts";
import { delay, gate, waitUntil, within } from "../harness/wait.ts";

describe("a runtime that takes no job over, after the server was away", () => {
  let server: NatsServerHandle;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server?.dispose();
  });

  it("takes its own job's lease back: the job's progress is written again", async () => {
    const rt = await createRuntime({
      servers: server.url,
      logger: silentLogger(),
      connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
      jobs: { takeOver: false, leaseMs: 1000, cleanupIntervalMs: 0 },
    });
    const second = gate();
    const third = gate();
    const worker = rt.workers.start<number, number>({
      queue: "taken_back",
      concurrency: 3,
      handler: async (task) => {
        if (task.index === 1) await second.opened;
        if (task.index === 2) await third.opened;
        return task.payload;
      },
    });
    try {
      const job = await rt.jobs.submit({
        queue: "taken_back",
        tasks: [0, 1, 2],
        lane: false,
        stallAfterMs: 60_000,
      });
      const done = async () => (await rawJobRecord(server.url, job.id).catch(() => undefined))?.counts.done;
      await waitUntil(async () => (await done()) === 1, {
        timeoutMs: 10_000,
        message: "the first answer's progress written",
      });
      // Away for longer than the lease: every renewal fails meanwhile.
      await server.stop();
      await delay(2500);
      await server.restart();
      second.open();
      // Progress is written at most once a second by the job's supervisor, and only by it.
      await waitUntil(async () => (await done()) === 2, {
        timeoutMs: 10_000,
        message: "the second answer's progress written after the server came back",
      });
      third.open();
      expect(await within(job.done(), 15_000)).toMatchObject({ status: "succeeded", done: 3 });
    } finally {
      second.open();
      third.open();
      await worker.stop();
      await rt.stop();
    }
  }, 60_000);
});
