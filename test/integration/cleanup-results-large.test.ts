/**
 * The cleanup pass on a finished job with thousands of results messages (a
 * slow job's results go one message each): they were deleted one by one
 * inside the pass's one operation, and the pass failed at its deadline with
 * nothing after it done (records). Now each job's results go in an
 * operation of their own (a review; 5,000 messages at a 1 s deadline, as
 * delayed-cleanup-large.test.ts does for held tasks).
 */
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import { createRuntime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { startNatsServer } from "../harness/nats-server.ts";
import { delay } from "../harness/wait.ts";

it("removes a finished job's thousands of results messages past the operation's deadline, and the pass ends", async () => {
  const server = await startNatsServer();
  const rt = await createRuntime({
    servers: server.url,
    logger: silentLogger(),
    connection: { operationTimeoutMs: 1000 },
    jobs: { cleanupIntervalMs: 0 },
  });
  const raw = await connect({ servers: server.url });
  try {
    const queue = "results-large";
    const worker = rt.workers.start<number, number>({ queue, handler: (task) => task.payload });
    const job = await rt.jobs.submit<number, number>({ queue, tasks: [0] });
    expect(await job.done()).toMatchObject({ status: "succeeded" });
    await worker.stop();
    const js = jetstream(raw);
    const subject = `jetstate.results.${queue}.${job.id}`;
    for (let start = 0; start < 5000; start += 500) {
      const acks = [];
      for (let i = start; i < start + 500; i++) acks.push(js.publish(subject, JSON.stringify([])));
      await Promise.all(acks);
    }
    // Past its retention (10 ms).
    await delay(50);
    const report = await rt.admin.cleanup({ retentionMs: 10 });
    expect(report.recordsRemoved).toContain(job.id);
    const jsm = await js.jetstreamManager();
    const left = (await jsm.streams.info("jetstate_results", { subjects_filter: subject })).state.subjects;
    expect(left?.[subject] ?? 0).toBe(0);
  } finally {
    await raw.close();
    await rt.stop();
    await server.dispose();
  }
}, 120_000);
