/**
 * A runtime stopped while one of its submits waits on another submit of the
 * same key, one that died before its commit (found by a review of the
 * commit deadline across clocks: a scheduler's tick waited so, and its
 * runtime's stop took over 45 s). `rt.stop()` must not wait for the dead
 * submit's deadline: the waiting submit is given up (RuntimeStopped), and
 * the stop returns in a few seconds. Oracles: the test's own clock, and the
 * submit's promise.
 */
import { expect, it } from "vitest";
import { partsOf } from "../../src/api/runtime.ts";
import { SimulatedCrash, SubmitStep } from "../../src/effects/submit-job.ts";
import { realClock } from "../../src/kernel/clock.ts";
import { memoryClockBackend } from "../harness/clock-backends.ts";
import { delay } from "../harness/wait.ts";

it("rt.stop() returns within seconds while a submit of the runtime waits on a dead submit of its key", async () => {
  const backend = memoryClockBackend();
  try {
    const queue = "q";
    // A submitter that died after its record's create: its submit of key k is left `submitting`.
    const dead = await backend.submitter("dead", {
      clock: realClock,
      hooks: {
        afterStep: (at) => {
          if (at === SubmitStep.recordCreated) throw new SimulatedCrash(`process died after ${at}`);
        },
      },
    });
    await dead.registry
      .submit({ queue, tasks: [1, 2], idempotencyKey: "k", lane: false })
      .catch(() => undefined);
    await dead.stop();
    // A runtime (no reaper) submits the same key: it waits on the dead submit.
    const rt = await backend.runtime("waiter");
    const waiting = rt.jobs.submit({ queue, tasks: [1, 2], idempotencyKey: "k", lane: false }).then(
      () => "committed",
      (error: unknown) => String(error),
    );
    await delay(1000);
    const stopStarted = Date.now();
    const stopped = rt.stop().then(() => Date.now() - stopStarted);
    const tookMs = await Promise.race([stopped, delay(10_000).then(() => Number.POSITIVE_INFINITY)]);
    // Unblock the stop if it still waits (another runtime's reaper, an hour on, rolls the dead
    // submit back), so the test ends either way.
    const admin = await backend.runtime("admin");
    await partsOf(admin).jobs.reap(() => Date.now() + 3600_000);
    await stopped;
    expect(tookMs).toBeLessThan(5000);
    expect(await waiting).toMatch(/RuntimeStopped|stopped/);
  } finally {
    await backend.stop();
  }
}, 60_000);
