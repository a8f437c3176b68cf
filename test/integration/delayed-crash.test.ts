/**
 * A submit that dies after holding its tasks (NATS): its record stays
 * `submitting`, so a mover that finds a task due asks again shortly and never
 * moves it; the reaper rolls the submit back, which removes the held tasks.
 * Oracles, read by the test's own nats.js client: the tasks stored on the
 * job's subject (none, ever), the `due` consumer's redeliveries (the mover
 * did look again), and the delayed stream (empty after the rollback).
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { jobIdFor } from "../../src/effects/plan-submit.ts";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { crashingSubmitter } from "../harness/crashing-submitter.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

describe("a delayed submit that dies before its commit", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
  });
  afterAll(async () => {
    await nc?.close();
    await rt?.stop();
    await server?.dispose();
  });

  const stored = async (stream: string, subject: string): Promise<number> => {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(stream, { subjects_filter: subject }).catch(() => undefined);
    return info?.state.subjects?.[subject] ?? 0;
  };

  it("is never moved while submitting, and its rollback leaves nothing held", async () => {
    const queue = "crashed";
    // Dies once its tasks are published and held.
    const crashing = await crashingSubmitter(server.url, SubmitStep.tasksPublished, {
      retentionMs: 3600_000,
    });
    // Due at once after the crash: every mover (the live runtime's) finds it due while submitting.
    const runAt = Date.now() + 300;
    await expect(
      crashing.registry.submit({ queue, tasks: [1, 2, 3], runAt, idempotencyKey: "dies" }),
    ).rejects.toThrow(/process died/);
    await crashing.stop();
    const jobId = jobIdFor(queue, "dies");
    // A runtime started after, with a delayed job of its own on the queue: its mover follows the
    // queue (api/movers.ts) and finds the tasks the crashed submit held there.
    rt = await createRuntime({ servers: server.url, logger: silentLogger(), jobs: { reapIntervalMs: 0 } });
    await rt.jobs.submit({ queue, tasks: ["later"], delayMs: 600_000 });
    expect(await stored(`jetstate_delayed_${queue}`, `jetstate.delayed.${queue}.${jobId}`)).toBe(3);

    // The live runtime's mover looks at them again and again once due (the server counts its
    // deliveries: its own job's 1, then the crashed submit's 3 at their time, 3 more 200 ms after
    // "still submitting", and so on)...
    const jsm = await jetstreamManager(nc);
    await waitUntil(
      async () =>
        (await jsm.consumers.info(`jetstate_delayed_${queue}`, "due")).delivered.consumer_seq >= 10 ||
        // Or moved already: the assertion below says so.
        (await stored(`jetstate_tasks_${queue}`, `jetstate.tasks.${queue}.${jobId}`)) > 0,
      {
        timeoutMs: 10_000,
        message: "the held tasks delivered again after their time",
      },
    );
    expect(Date.now()).toBeGreaterThanOrEqual(runAt);
    // ...and never moves them: the submit never committed.
    expect(await stored(`jetstate_tasks_${queue}`, `jetstate.tasks.${queue}.${jobId}`)).toBe(0);

    const report = await partsOf(rt).jobs.reap(() => Date.now() + 10 * 60_000);
    expect(report.rolledBack).toEqual([jobId]);
    expect(await stored(`jetstate_delayed_${queue}`, `jetstate.delayed.${queue}.${jobId}`)).toBe(0);
    expect(await stored(`jetstate_tasks_${queue}`, `jetstate.tasks.${queue}.${jobId}`)).toBe(0);
  });
});
