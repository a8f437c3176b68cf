/**
 * A submit's commit deadline across hosts whose clocks differ, on the memory
 * broker (a server on the real clock) and on a nats-server. A submit stamps
 * its record's `commitDeadline` by its own clock; the reaper, another
 * runtime, judges it. The oracles are the test's own: the record read raw,
 * the tasks a worker's handler ran, the time by the test's clock.
 */
import { describe, expect, it } from "vitest";
import { partsOf } from "../../src/api/runtime.ts";
import { nextTick } from "../../src/api/schedule-rule.ts";
import { jobIdFor } from "../../src/effects/plan-submit.ts";
import { SimulatedCrash, SubmitStep } from "../../src/effects/submit-job.ts";
import { realClock } from "../../src/kernel/clock.ts";
import { tickKey } from "../../src/kernel/schedule-record.ts";
import { clockBackends, offsetBy } from "../harness/clock-backends.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const backends = clockBackends();

const minute = 60_000;
const tenMinutes = 600_000;

/** A submit hook that dies after the record's create, as a process killed there: nothing cleaned up. */
const diesAfterCreate = {
  afterStep: (at: SubmitStep) => {
    if (at === SubmitStep.recordCreated) throw new SimulatedCrash(`process died after ${at}`);
  },
};

describe.each(backends)("commit deadlines across clocks, on $name", ({ make }) => {
  it.each([
    { kind: "a job of its own consumer", tasks: [1, 2, 3], lane: false },
    // Its publish is its commit point: the submit answered with the job while its record said
    // rolled back, and its task never ran.
    { kind: "a 1-task lane job", tasks: [1], lane: true },
  ])(
    "a reaper a minute ahead leaves a live submit alone ($kind): it commits and its tasks run",
    async ({ tasks, lane }) => {
      const backend = make();
      try {
        const queue = "slow";
        const ran: number[] = [];
        const worker = await backend.runtime("worker");
        worker.workers.start({
          queue,
          handler: (task) => {
            ran.push(task.payload as number);
            return null;
          },
        });
        let release = () => {};
        const held = new Promise<void>((resolve) => {
          release = resolve;
        });
        let created = () => {};
        const recordCreated = new Promise<void>((resolve) => {
          created = resolve;
        });
        // A submit slow between its record's create and its publish (a big job, a slow link),
        // on a host whose clock is right.
        const slow = await backend.submitter("slow", {
          clock: realClock,
          hooks: {
            afterStep: async (at) => {
              if (at !== SubmitStep.recordCreated) return;
              created();
              await held;
            },
          },
        });
        const reaper = await backend.runtime("reaper-ahead", { clock: offsetBy(minute) });
        const submitted = slow.registry.submit({ queue, tasks, lane });
        submitted.catch(() => undefined);
        await recordCreated;
        // Two seconds of the submit's 30 s window went by the real clock.
        await delay(2000);
        await partsOf(reaper).jobs.reap();
        release();
        const outcome = await submitted.then(
          (job) => ({ ok: true as const, id: job.id }),
          (error: unknown) => ({ ok: false as const, error: String(error) }),
        );
        expect(outcome).toEqual({ ok: true, id: expect.any(String) });
        await waitUntil(() => ran.length >= tasks.length, { timeoutMs: 10_000, message: "the tasks ran" });
        expect([...ran].sort()).toEqual(tasks);
        // Its end is written once the last answer is heard (a moment after the handler returned).
        await waitUntil(
          async () => (await backend.records()).find((r) => r.queue === queue)?.status === "succeeded",
          { timeoutMs: 10_000, message: "the job's record says succeeded" },
        );
        expect((await backend.records()).find((r) => r.queue === queue)).toMatchObject({
          phase: "committed",
        });
      } finally {
        await backend.stop();
      }
    },
    30_000,
  );

  it("a submit by a runtime ten minutes ahead that died before its commit is rolled back when its window and the grace have passed, not ten minutes on", async () => {
    const backend = make();
    try {
      const queue = "dead";
      const ahead = await backend.submitter("dead-ahead", {
        clock: offsetBy(tenMinutes),
        hooks: diesAfterCreate,
      });
      const failed = await ahead.registry
        .submit({ queue, tasks: [1, 2], idempotencyKey: "k", lane: false })
        .then(() => "committed", String);
      expect(failed).toMatch(/process died/);
      await ahead.stop();
      const reaper = await backend.runtime("reaper");
      const id = jobIdFor(queue, "k");
      // 20 s on (the window is 30 s): not dead yet, left as it is.
      await partsOf(reaper).jobs.reap(() => Date.now() + 20_000);
      expect((await backend.records()).find((r) => r.id === id)).toMatchObject({ phase: "submitting" });
      // 45 s on: past the 30 s window and the 10 s grace, as the server's clock counts them.
      await partsOf(reaper).jobs.reap(() => Date.now() + 45_000);
      expect((await backend.records()).find((r) => r.id === id)).toMatchObject({ phase: "rolledBack" });
    } finally {
      await backend.stop();
    }
  }, 30_000);

  it("a tick whose submit a runtime ten minutes ahead left dead runs once the window and the grace have passed, not ten minutes on", async () => {
    const backend = make();
    try {
      const queue = "ticked";
      const id = "ticked";
      const period = 5000;
      const ran: number[] = [];
      // The right runtimes: one fires the ticks and reaps (its grace 1 s), one runs the tasks.
      const right = await backend.runtime("right", { jobs: { reapIntervalMs: 1000, reapGraceMs: 1000 } });
      right.workers.start({
        queue,
        handler: () => {
          ran.push(Date.now());
          return null;
        },
      });
      // A tick a few seconds on: its job's submit made ahead of it by a runtime ten minutes ahead
      // (its scheduler, having fired it by its clock), which died after the record's create.
      const tick = nextTick({ everyMs: period }, Date.now() + 3000)!;
      const ahead = await backend.submitter("dead-ahead", {
        clock: offsetBy(tenMinutes),
        hooks: diesAfterCreate,
      });
      await ahead.registry
        .submit({ queue, tasks: [1], idempotencyKey: tickKey(id, tick) })
        .catch(() => undefined);
      const deadAt = Date.now();
      await ahead.stop();
      await right.schedules.upsert({ id, everyMs: period, job: { queue, tasks: [1] } });
      const jobId = jobIdFor(queue, tickKey(id, tick));
      // The window (30 s) and the grace (1 s) from the dead submit's write, a reaper's pass and a
      // few seconds' slack; ten minutes by its stamps.
      let committedAt: number | undefined;
      for (const until = deadAt + 45_000; Date.now() < until && committedAt === undefined; await delay(250)) {
        const stored = (await backend.records()).find((r) => r.id === jobId);
        if (stored?.phase === "committed") committedAt = Date.now();
      }
      expect(committedAt).toBeDefined();
      expect(committedAt! - deadAt).toBeGreaterThanOrEqual(30_000);
    } finally {
      await backend.stop();
    }
  }, 90_000);
});
