import { getShortestPaths } from "@xstate/graph";
import type { SnapshotFrom } from "xstate";
import type { JobSettings } from "../../src/kernel/job-record.ts";
import { type JobEvent, jobMachine } from "../../src/machines/job.machine.ts";
import type { JobInput } from "../../src/machines/job-context.ts";

/**
 * The job machine's model: the settings, input and events paths are generated
 * with, and the state identity. Shared by the replay on idle actors
 * (job.model.test.ts) and the replay on real runtimes (job.runtime.model.test.ts).
 */

export const settings: JobSettings = {
  maxFailures: 0.34, // 1 of 3 tasks may fail
  ackWaitMs: 1000,
  maxDeliver: 3,
  backoffMs: [10],
  stallAfterMs: 1000,
  stalledTimeoutMs: 3000,
};
export const input: JobInput = { jobId: "j1", queue: "q", total: 3, settings, now: 0 };

export const ok = (i: number) => ({ i, ok: true });
export const died = (i: number) => ({ i, ok: false, dead: true });
export const redrive = (i: number) => ({ i, redrive: true });

export const events = [
  { type: "submit.committed" },
  { type: "submit.failed", error: new Error("publish refused") },
  { type: "results.received", entries: [ok(0)], at: 100 },
  { type: "results.received", entries: [ok(0)], at: 200 }, // a duplicate: counted once
  { type: "results.received", entries: [ok(1), { i: 2, ok: false }], at: 300 },
  { type: "results.received", entries: [ok(1)], at: 350 },
  { type: "results.received", entries: [{ i: 1, ok: false }, died(2)], at: 300 },
  // The last task left exhausts its deliveries alone: a dead letter must still end the job.
  { type: "results.received", entries: [died(2)], at: 400 },
  // The dead task is redriven: its answer is forgotten (nothing happens unless it was dead).
  { type: "results.received", entries: [redrive(2)], at: 450 },
  // An answer after the stall ticks: progress that takes a stalled job back to running.
  { type: "results.received", entries: [ok(2)], at: 6000 },
  { type: "clock.tick", now: 1500 }, // > stallAfterMs since the last progress at 0 or 100
  { type: "clock.tick", now: 5000 }, // stalled longer than stalledTimeoutMs
  { type: "job.cancel", reason: "user" },
  // The end written, or not (the broker refused): the actor ends either way.
  { type: "finalize.settled" },
] as unknown as JobEvent[];

/**
 * The events the oracle replays add: an answer stamped in the very millisecond
 * of the 1500 stall tick is progress too (a second stall becomes reachable,
 * a route job.runtime.model.test.ts has no scenario for, so it keeps `events`),
 * and the record as the runtime's record watch hands it over.
 */
export const oracleEvents = [
  ...events,
  { type: "results.received", entries: [ok(1)], at: 1500 },
  // The end's write refused (a redrive reopened the job, its marker not counted): the results
  // held since, the marker among them, are counted and the job runs again. Not through a
  // runtime's paths: only a redrive racing the end's write makes it (redrive-end-race.both.test.ts).
  { type: "results.received", entries: [redrive(2)], at: 450, reopen: true },
  // The record as another runtime wrote it: progress (nothing to decide), its end, a cancel.
  { type: "record.changed", status: "running", counts: { done: 1, failed: 0, dead: 0 }, reason: null },
  { type: "record.changed", status: "succeeded", counts: { done: 3, failed: 0, dead: 0 }, reason: null },
  {
    type: "record.changed",
    status: "failed",
    counts: { done: 1, failed: 0, dead: 0 },
    reason: "cancelled: elsewhere",
  },
] as unknown as JobEvent[];

/** Time-varying fields are not part of the state identity; counts and answers are. */
export const serializeState = (s: SnapshotFrom<typeof jobMachine>): string =>
  JSON.stringify({
    v: s.value,
    d: s.context.done,
    f: s.context.failed,
    x: s.context.dead,
    a: [...s.context.answered],
    st: s.context.stalledSince !== null,
  });

/** One path to replay: the input the actor starts with and the events it is sent (xstate.init left out). */
export interface JobPath {
  readonly name: string;
  readonly input: JobInput;
  readonly events: readonly JobEvent[];
  /** A shortest path, one extended by an event, or a resumed job's. */
  readonly kind: "shortest" | "extended" | "resumed";
}

const describeEvents = (list: readonly JobEvent[]) => list.map((e) => e.type).join(" → ");

/**
 * The paths every job replay takes: the shortest path to every (state,
 * counts) pair, each extended by every event once (two routes to one state
 * leave transitions untaken: the extensions take every transition out of
 * every reachable state), and the start of a job resumed from each status.
 */
export const jobPaths = (): JobPath[] => {
  const shortest = getShortestPaths(jobMachine, { events: oracleEvents, input, serializeState } as never);
  const heads = shortest.map((p) => p.steps.slice(1).map((s) => s.event as JobEvent));
  const extended = shortest.flatMap((p, n) =>
    p.state.status !== "done" ? oracleEvents.map((e) => [...heads[n]!, e]) : [],
  );
  const fresh = [...heads, ...extended].map((list, n) => ({
    name: describeEvents(list) || "(submitting)",
    input,
    events: list,
    kind: n < heads.length ? ("shortest" as const) : ("extended" as const),
  }));
  const resumed = (["running", "stalled", "succeeded", "failed"] as const).flatMap((resumeFrom) => {
    const from: JobInput = {
      ...input,
      resumeFrom,
      counts: { done: 2, failed: 1, dead: 0 },
      ...(resumeFrom === "failed" ? { reason: "cancelled: before the restart" } : {}),
    };
    const paths = getShortestPaths(jobMachine, {
      events: oracleEvents,
      input: from,
      serializeState,
    } as never);
    return paths.map((p) => {
      const list = p.steps.slice(1).map((s) => s.event as JobEvent);
      return {
        name: `resumed ${resumeFrom}: ${describeEvents(list) || "(start)"}`,
        input: from,
        events: list,
        kind: "resumed" as const,
      };
    });
  });
  return [...fresh, ...resumed];
};
