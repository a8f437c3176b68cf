/**
 * A submitter SIGKILLed after the commit of a job whose tasks are all held
 * (NATS, a real OS process): nothing of its process is left to move them,
 * and the test's runtime has no job of the queue until it takes this one
 * over (its supervision lease ran out). It then follows the queue's delayed
 * stream (api/movers.ts) and moves the tasks at their time. Oracles: the
 * handlers' ledger (each task once, never before its time) and the queue's
 * delayed stream read by the test's own nats.js client.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { startChild } from "../harness/child-processes.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

describe("a delayed job's submitter SIGKILLed after its commit", () => {
  let server: NatsServerHandle;
  let raw: NatsConnection;
  let rt: Runtime | undefined;
  beforeAll(async () => {
    server = await startNatsServer();
    raw = await connect({ servers: server.url });
  });
  afterAll(async () => {
    await rt?.stop();
    await raw?.close();
    await server?.dispose();
  });

  const held = async (queue: string, jobId: string): Promise<number> => {
    const subject = `jetstate.delayed.${queue}.${jobId}`;
    const jsm = await jetstreamManager(raw);
    const info = await jsm.streams.info(`jetstate_delayed_${queue}`, { subjects_filter: subject });
    return info.state.subjects?.[subject] ?? 0;
  };

  it("the runtime that takes the job over moves its tasks at their time", { timeout: 90_000 }, async () => {
    const queue = "killed";
    // Due after the child's start, its submit and the takeover (a lease of 500 ms); a loaded CI run took
    // longer than 6 s to start the child.
    const runAt = Date.now() + 12_000;
    const ledger: { job: string; index: number; at: number }[] = [];
    rt = await createRuntime({ servers: server.url, logger: silentLogger(), jobs: { leaseMs: 500 } });
    const worker = rt.workers.start<number, number>({
      queue,
      handler: (task) => {
        ledger.push({ job: task.jobId, index: task.index, at: Date.now() });
        return task.payload;
      },
    });
    const child = startChild("delayed-submitter", process.cwd(), "test/fixtures/delayed-submitter.ts", [
      server.url,
      queue,
      String(runAt),
      "500",
    ]);
    const submitted = await child.waitFor((l) => l.event === "submitted", "the job committed", 20_000);
    await child.kill("SIGKILL");
    const jobId = String(submitted.jobId);
    // The point of the test: every task still held when its submitter died.
    if (Date.now() >= runAt) throw new Error("the child took longer than the delay: nothing was held");
    expect(await held(queue, jobId)).toBe(3);

    // A task the child's mover had been handed and not yet answered when it died comes back only
    // once the due consumer's ack wait (5 s; 30 s before) has run out: a CI run saw it take longer than 20 s.
    await waitUntil(() => ledger.length >= 3, { timeoutMs: 30_000, message: "every held task handled" });
    await worker.stop();
    expect(ledger.map((h) => [h.job, h.index]).sort()).toEqual([
      [jobId, 0],
      [jobId, 1],
      [jobId, 2],
    ]);
    for (const h of ledger) expect(h.at).toBeGreaterThanOrEqual(runAt);
    expect(await held(queue, jobId)).toBe(0);
    const job = await rt.jobs.get(jobId);
    expect(await job?.done()).toMatchObject({ status: "succeeded", done: 3 });
  });
});
