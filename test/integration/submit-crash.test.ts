import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import { crashingSubmitter } from "../harness/crashing-submitter.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const tasks = Array.from({ length: 25 }, (_, n) => ({ n }));

/**
 * A submit can die after any of its steps. Before the commit point (the
 * consumer; a lane job of several tasks: its record's commit) the reaper
 * rolls it back: no task left, the record says failed. After it, the reaper
 * rolls forward. Either way nothing stays in `queuing`, and submitting again
 * with the same key works.
 */
describe("a submit that crashes at every step", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({ servers: server.url, logger });
    nc = await connect({ servers: server.url });
  });
  afterAll(async () => {
    await nc?.close();
    await rt?.stop();
    await server?.dispose();
  });

  /** The job's tasks stored (on its subject, or on the lane's) and the consumer that serves them, as the server has them. */
  const visibleTasks = async (queue: string, jobId: string, lane: boolean) => {
    const jsm = await jetstreamManager(nc);
    const subject = lane ? `jetstate.tasks.${queue}.lane.${jobId}` : `jetstate.tasks.${queue}.${jobId}`;
    const info = await jsm.streams.info(`jetstate_tasks_${queue}`, { subjects_filter: subject });
    const stored = info.state.subjects?.[subject] ?? 0;
    const consumer = await jsm.consumers.info(`jetstate_tasks_${queue}`, lane ? "lane" : jobId).then(
      () => true,
      () => false,
    );
    return { stored, consumer };
  };

  it.each([
    [SubmitStep.recordCreated, "rolledBack", false],
    [SubmitStep.tasksPublished, "rolledBack", false],
    [SubmitStep.consumerCreated, "committed", false],
    [SubmitStep.recordCommitted, "committed", false],
    [SubmitStep.recordCreated, "rolledBack", true],
    [SubmitStep.tasksPublished, "rolledBack", true],
    [SubmitStep.recordCommitted, "committed", true],
  ] as const)(
    "crash after %s → %s by the reaper (lane: %s); resubmit with the same key works",
    async (step, expected, lane) => {
      const queue = `crash_${step}${lane ? "_lane" : ""}`;
      const key = `upload-${step}-${lane}`;
      // Its supervision lease (300 ms) runs out before another runtime finishes a committed job.
      const crashing = await crashingSubmitter(server.url, step, { logger });
      await expect(crashing.registry.submit({ queue, tasks, idempotencyKey: key, lane })).rejects.toThrow(
        /process died after/,
      );
      // The crashed process is gone: nothing of it runs any more.
      await crashing.stop();

      const {
        jobs: [before],
      } = await rt.jobs.list({ queue });
      expect(before?.status).toBe(
        expected === "committed" && step === SubmitStep.recordCommitted ? "running" : "queuing",
      );

      // Nothing happens before the commit deadline has passed by the grace...
      expect(await partsOf(rt).jobs.reap(() => Date.now())).toEqual({ rolledBack: [], rolledForward: [] });
      // ...and after it the reaper finishes the submit one way or the other.
      const later = () => Date.now() + 10 * 60_000;
      const report = await partsOf(rt).jobs.reap(later);
      const {
        jobs: [after],
      } = await rt.jobs.list({ queue });
      const jobId = after!.id;
      if (expected === "rolledBack") {
        expect(report.rolledBack).toEqual([jobId]);
        expect(after).toMatchObject({ status: "failed", phase: "rolledBack" });
        // A lane job's tasks are removed; the lane is made with the first lane job's publish and stays.
        expect(await visibleTasks(queue, jobId, lane)).toEqual({
          stored: 0,
          consumer: lane && step !== SubmitStep.recordCreated,
        });
      } else {
        if (step === SubmitStep.consumerCreated) expect(report.rolledForward).toEqual([jobId]);
        expect(after).toMatchObject({ status: "running", phase: "committed" });
        expect(await visibleTasks(queue, jobId, lane)).toEqual({ stored: tasks.length, consumer: true });
      }
      expect((await rt.jobs.list()).jobs.filter((r) => r.status === "queuing")).toEqual([]);

      // Submitting again with the same key: a new submit (rolled back) or the same job (committed).
      const worker = rt.workers.start<{ n: number }, number>({ queue, handler: (t) => t.payload.n });
      const again = await rt.jobs.submit({ queue, tasks, idempotencyKey: key, lane });
      expect(again.id).toBe(jobId);
      const final = await again.done();
      await worker.stop();
      expect(final).toMatchObject({ status: "succeeded", done: tasks.length, failed: 0 });
    },
  );
});
