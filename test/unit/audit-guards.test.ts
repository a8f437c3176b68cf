import { describe, expect, it } from "vitest";
import { createActor } from "xstate";
import { memoryAgentStore } from "../../src/adapters/memory/memory-agent-store.ts";
import { createAgentRegistry } from "../../src/api/agents.ts";
import { type JobSettings, withinTolerance } from "../../src/kernel/job-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { jobMachine } from "../../src/machines/job.machine.ts";
import type { JobInput } from "../../src/machines/job-context.ts";

/**
 * Guards an audit changed without any test noticing (issue #13): each case
 * here states the rule with its own numbers (written out, never read back
 * from the constant or the guard under test), so a changed guard fails it.
 * test/mutants/run.ts applies those changes and expects these to fail.
 */

const settings: JobSettings = {
  maxFailures: 0,
  ackWaitMs: 30_000,
  maxDeliver: 5,
  backoffMs: [1000],
  stallAfterMs: 100,
  stalledTimeoutMs: 0,
};

/** The job machine with no I/O: a submit and a finalize that never settle, no feed, no clock. */
const startJob = (input: Partial<Omit<JobInput, "settings">> & { settings?: Partial<JobSettings> } = {}) =>
  createActor(jobMachine, {
    input: {
      jobId: "j1",
      queue: "q",
      total: 2,
      now: 0,
      resumeFrom: "running",
      ...input,
      settings: { ...settings, ...input.settings },
    },
  }).start();

const top = (actor: ReturnType<typeof startJob>) => {
  const value = actor.getSnapshot().value;
  return typeof value === "string" ? value : Object.keys(value)[0];
};

describe("job machine guards", () => {
  it("stalledTimeoutMs 0 means never: a stalled job stays stalled however long", () => {
    const job = startJob({ settings: { stallAfterMs: 100, stalledTimeoutMs: 0 } });
    job.send({ type: "clock.tick", now: 100 });
    expect(top(job)).toBe("stalled");
    job.send({ type: "clock.tick", now: 100 });
    job.send({ type: "clock.tick", now: 24 * 3600_000 });
    expect(top(job)).toBe("stalled");
    expect(job.getSnapshot().context.reason).toBeNull();
    job.stop();
  });

  it("an answer stamped in the very millisecond the job stalled takes it back to running", () => {
    const job = startJob({ settings: { stallAfterMs: 100 } });
    job.send({ type: "clock.tick", now: 100 });
    expect(top(job)).toBe("stalled");
    job.send({ type: "results.received", entries: [{ i: 0, ok: true }], at: 100 });
    expect(top(job)).toBe("running");
    expect(job.getSnapshot().context.done).toBe(1);
    job.stop();
  });

  it("a cancel while the job is still being submitted ends it as failed, with the reason", () => {
    const job = startJob({ resumeFrom: undefined });
    expect(job.getSnapshot().matches({ queuing: "submitting" })).toBe(true);
    job.send({ type: "job.cancel", reason: "changed my mind" });
    expect(top(job)).toBe("failed");
    expect(job.getSnapshot().context.reason).toBe("cancelled: changed my mind");
    job.stop();
  });

  it("a result whose index is not a task of the job (≥ total) is ignored", () => {
    const job = startJob({ total: 2 });
    job.send({
      type: "results.received",
      entries: [
        { i: 2, ok: true },
        { i: 9, ok: true },
        { i: 0, ok: true },
      ],
      at: 10,
    });
    expect(job.getSnapshot().context).toMatchObject({ done: 1, failed: 0, dead: 0 });
    expect(top(job)).toBe("running");
    job.stop();
  });
});

describe("failure tolerance", () => {
  it("is rounded down: 15 % of 10 tasks tolerates 1 failure, not 2", () => {
    expect(withinTolerance({ done: 9, failed: 1, dead: 0 }, 10, 0.15)).toBe(true);
    expect(withinTolerance({ done: 8, failed: 1, dead: 1 }, 10, 0.15)).toBe(false);
    expect(withinTolerance({ done: 8, failed: 2, dead: 0 }, 10, 0.15)).toBe(false);
  });

  it("a job with 2 of 10 failed at 15 % tolerance fails", () => {
    const job = startJob({ total: 10, settings: { maxFailures: 0.15 } });
    job.send({
      type: "results.received",
      entries: Array.from({ length: 10 }, (_, i) => ({ i, ok: i >= 2 })),
      at: 10,
    });
    expect(top(job)).toBe("failed");
    expect(job.getSnapshot().context.reason).toMatch(/2 of 10 tasks failed/);
    job.stop();
  });
});

describe("agent lock: the default skip window is two hours", () => {
  const TWO_HOURS = 7_200_000; // written out: the test must not derive it from the constant

  it("skips a failed target for exactly 2 h when no skipForMs is given", async () => {
    let now = 1_000_000;
    const registry = createAgentRegistry({
      logger: silentLogger(),
      store: memoryAgentStore(),
      now: () => now,
    });
    await registry.register({ agentId: "a", targets: ["A", "B"], current: "A", load: () => 0 });
    await expect(registry.reportFailure("a", { target: "A" })).resolves.toMatchObject({ to: "B" });
    expect(registry.get("a")?.skips).toEqual([{ target: "A", until: 1_000_000 + TWO_HOURS }]);

    now += TWO_HOURS - 1;
    await expect(registry.reportFailure("a", { target: "B" })).resolves.toMatchObject({
      outcome: "exhausted",
    });
    now += 1;
    await expect(registry.reportFailure("a", { target: "B" })).resolves.toMatchObject({
      outcome: "switched",
      to: "A",
    });
    await registry.stop();
  });
});
