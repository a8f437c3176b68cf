import { getShortestPaths } from "@xstate/graph";
import { describe, expect, it } from "vitest";
import { createActor, fromCallback, fromPromise, type SnapshotFrom } from "xstate";
import type { JobSettings } from "../../src/effects/job-record.ts";
import {
  type FinalizeInput,
  type JobEvent,
  type JobInput,
  jobMachine,
} from "../../src/machines/job.machine.ts";

/**
 * Model-based tests of the job machine: every shortest path to every
 * reachable (state, counts) pair is generated from the machine itself, then
 * replayed on a live actor whose I/O actors never settle by themselves (the
 * path sends their done/error events), and the live actor must reach the
 * path's state with the same counts.
 */

const settings: JobSettings = {
  maxFailures: 0.34, // 1 of 3 tasks may fail
  ackWaitMs: 1000,
  maxDeliver: 3,
  backoffMs: [10],
  stallAfterMs: 1000,
  stalledTimeoutMs: 3000,
};
const input: JobInput = { jobId: "j1", queue: "q", total: 3, settings, now: 0 };

const ok = (i: number) => ({ i, ok: true });
const events = [
  { type: "xstate.done.actor.submit" },
  { type: "xstate.error.actor.submit", error: new Error("publish refused") },
  { type: "results.received", entries: [ok(0)], at: 100 },
  { type: "results.received", entries: [ok(0)], at: 200 }, // a duplicate: counted once
  { type: "results.received", entries: [ok(1), { i: 2, ok: false }], at: 300 },
  {
    type: "results.received",
    entries: [
      { i: 1, ok: false },
      { i: 2, ok: false, dead: true },
    ],
    at: 300,
  },
  { type: "clock.tick", now: 1500 }, // > stallAfterMs since the last progress at 0 or 100
  { type: "clock.tick", now: 5000 }, // stalled longer than stalledTimeoutMs
  { type: "job.cancel", reason: "user" },
  { type: "xstate.done.actor.finalize" },
] as unknown as JobEvent[];

const topState = (value: unknown) => (typeof value === "string" ? value : Object.keys(value as object)[0]);

const paths = getShortestPaths(jobMachine, {
  events,
  input,
  // Time-varying fields are not part of the state identity; counts and answers are.
  serializeState: (s: SnapshotFrom<typeof jobMachine>) =>
    JSON.stringify({
      v: s.value,
      d: s.context.done,
      f: s.context.failed,
      x: s.context.dead,
      a: [...s.context.answered],
      st: s.context.stalledSince !== null,
    }),
} as never);

const idle = {
  submit: fromPromise<void, { jobId: string }>(() => new Promise(() => undefined)),
  finalize: fromPromise<void, FinalizeInput>(() => new Promise<void>(() => undefined)),
  feed: fromCallback<JobEvent, { jobId: string; queue: string }>(() => undefined),
  clock: fromCallback<JobEvent, { everyMs: number }>(() => undefined),
};

describe("job machine, model-based", () => {
  it("reaches all five top-level states and both sub-states of each end", () => {
    const reached = new Set(paths.map((p) => JSON.stringify(p.state.value)));
    for (const top of ["queuing", "running", "stalled", "succeeded", "failed"]) {
      expect([...reached].some((v) => v.includes(`"${top}"`) || v === `"${top}"`)).toBe(true);
    }
    expect(reached).toContain(JSON.stringify({ succeeded: "recorded" }));
    expect(reached).toContain(JSON.stringify({ failed: "recorded" }));
    expect(paths.length).toBeGreaterThan(15);
  });

  it.each(paths.map((p) => [p.steps.map((s) => s.event.type).join(" → "), p] as const))(
    "replays %s",
    (_name, path) => {
      const actor = createActor(jobMachine.provide({ actors: idle }), { input });
      actor.start();
      for (const step of path.steps.slice(1)) actor.send(step.event as JobEvent);
      const live = actor.getSnapshot();
      expect(live.value).toEqual(path.state.value);
      expect([live.context.done, live.context.failed, live.context.dead]).toEqual([
        path.state.context.done,
        path.state.context.failed,
        path.state.context.dead,
      ]);
      // Invariants that must hold on every path.
      const c = live.context;
      expect(c.done + c.failed + c.dead).toBeLessThanOrEqual(c.total);
      const top = topState(live.value);
      if (top === "succeeded") {
        expect(c.done + c.failed + c.dead).toBe(c.total);
        expect(c.failed + c.dead).toBeLessThanOrEqual(1);
      }
      if (top === "failed") expect(c.reason).toBeTruthy();
      actor.stop();
    },
  );

  it("resumes a committed job in running, and a finished one in its recorded end", () => {
    for (const [resumeFrom, expected] of [
      ["running", "running"],
      ["stalled", "running"],
      ["succeeded", { succeeded: "recorded" }],
      ["failed", { failed: "recorded" }],
    ] as const) {
      const actor = createActor(jobMachine.provide({ actors: idle }), {
        input: { ...input, resumeFrom, counts: { done: 3, failed: 0, dead: 0 } },
      }).start();
      expect(actor.getSnapshot().value).toEqual(expected);
      actor.stop();
    }
  });
});
