import { getShortestPaths } from "@xstate/graph";
import { describe, expect, it } from "vitest";
import { createActor, type InspectionEvent } from "xstate";
import type { FinalizeInput } from "../../src/kernel/job-record.ts";
import { type JobEvent, jobMachine } from "../../src/machines/job.machine.ts";
import type { JobInput } from "../../src/machines/job-context.ts";
import { transitionRecorder, transitionsOf } from "./coverage.ts";
import { fromMachineEvent, initialModel, stepModel } from "./job.oracle.ts";
import {
  died,
  events,
  input,
  type JobPath,
  jobPaths,
  ok,
  redrive,
  serializeState,
  settings,
} from "./job.paths.ts";

/**
 * Model-based tests of the job machine. Paths are generated from the machine
 * (job.paths.ts) only to get event sequences; each is replayed on a live
 * actor whose I/O never settles by itself (the path sends what the submit
 * and the finalize answer), and after every step the actor is compared with the
 * reference model (job.oracle.ts), which knows the job's rules but not its
 * machine: status, counts, reason, the stall, and the side effects (submit
 * running exactly while queuing, finalize started once, with the model's end).
 * The last test asserts that the replays took every transition of the machine.
 */

const topState = (value: unknown): string =>
  typeof value === "string" ? value : (Object.keys(value as object)[0] ?? "");

const paths = getShortestPaths(jobMachine, {
  events,
  input,
  serializeState,
} as never);

const replayed = jobPaths();
/** Transitions taken by the replays, and the paths replayed so far. */
const coverage = transitionRecorder(jobMachine);
const covered = new Set<JobPath>();

/** Replays one path on a live actor; every step is checked against the oracle. */
const replayOnActor = (path: JobPath, inspect: (e: InspectionEvent) => void = () => undefined) => {
  const finalized: FinalizeInput[] = [];
  const submits: string[] = [];
  // Started and not aborted; what it answers, the path sends.
  let submitting = false;
  const actor = createActor(
    jobMachine.provide({
      actions: {
        startSubmit: ({ context }) => {
          submits.push(context.jobId);
          submitting = true;
        },
        abortSubmit: () => {
          submitting = false;
        },
        startFinalize: (_, end) => {
          finalized.push(end);
        },
      },
    }),
    { input: path.input, inspect },
  );
  actor.start();
  let model = initialModel(path.input);
  const check = (where: string) => {
    const live = actor.getSnapshot();
    const c = live.context;
    const top = topState(live.value);
    expect({ status: top, recorded: JSON.stringify(live.value).includes("recorded") }, where).toEqual({
      status: model.status,
      recorded: model.recorded,
    });
    expect({ done: c.done, failed: c.failed, dead: c.dead, reason: c.reason }, where).toEqual({
      done: model.done,
      failed: model.failed,
      dead: model.dead,
      reason: model.reason,
    });
    // The bitmaps agree with the counts: dead letters once, every answer once.
    // (An end adopted from the record carries the record's counts, not answers counted here.)
    const counted =
      path.input.resumeFrom === undefined || model.status === "running" || model.status === "stalled";
    if (counted && !model.adopted) {
      expect(popcount(c.deadBits), `${where}: dead bits`).toBe(c.dead);
      expect(popcount(c.answered), `${where}: answered bits`).toBe(c.done + c.failed + c.dead);
    }
    if (model.status === "running" || model.status === "stalled")
      expect(c.stalledSince !== null, `${where}: stalled since`).toBe(model.status === "stalled");
    // Side effects: the submit runs exactly while queuing, and only for a new job …
    expect(submits, `${where}: submits`).toEqual(path.input.resumeFrom === undefined ? ["j1"] : []);
    expect(submitting, `${where}: submit running`).toBe(model.status === "queuing");
    // … the end is handed to finalize once, as the model decided it (never for a resumed end).
    // (An end adopted from the record is not written again.)
    // (Once more after each end whose write a redrive refused: the last one is the job's.)
    expect(finalized.length, `${where}: finalizes`).toBe(model.finalizes);
    expect(finalized.at(-1) ?? null, `${where}: finalize`).toEqual(
      model.finalize ? { jobId: "j1", queue: "q", ...model.finalize } : null,
    );
  };
  check("start");
  for (const [n, event] of path.events.entries()) {
    actor.send(event);
    const seen = fromMachineEvent(event as never);
    if (seen) model = stepModel(model, seen, path.input);
    check(`after step ${n + 1} (${event.type})`);
  }
  actor.stop();
  return model;
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

  it.each(replayed.map((p) => [p.name, p] as const))("replays %s against the oracle", (_name, path) => {
    const model = replayOnActor(path, coverage.inspect);
    covered.add(path);
    // Invariants of the model itself: never more answers than tasks, and over once all are in.
    expect(model.done + model.failed + model.dead).toBeLessThanOrEqual(3);
    if (model.status === "failed") expect(model.reason).toBeTruthy();
  });

  it("stall transitions: running → stalled on every path, stalled → running on progress, → failed on timeout", () => {
    const stalledPaths = paths.filter((p) => topState(p.state.value) === "stalled");
    expect(stalledPaths.length).toBeGreaterThan(0);
    let resumed = 0;
    for (const path of stalledPaths) {
      // Extend each path that ends stalled by an answer that arrives later: the job runs again
      // (or ends, when that was its last task).
      const actor = createActor(jobMachine, { input }).start();
      for (const step of path.steps.slice(1)) actor.send(step.event as JobEvent);
      const open = [0, 1, 2].find((i) => !bit(actor.getSnapshot().context.answered, i));
      if (open === undefined) throw new Error("stalled with every task answered"); // stalled means tasks are left
      actor.send({ type: "results.received", entries: [ok(open)], at: 9000 });
      const c = actor.getSnapshot().context;
      const top = topState(actor.getSnapshot().value);
      if (c.done + c.failed + c.dead < c.total) {
        expect(top).toBe("running");
        expect(c.stalledSince).toBeNull();
        resumed++;
      } else expect(["succeeded", "failed"]).toContain(top);
      actor.stop();
    }
    expect(resumed).toBeGreaterThan(0);
    const stalledFailed = paths.find((p) => p.state.context.reason?.startsWith("stalled: no progress"));
    expect(stalledFailed, "a path failing by the stall timeout").toBeDefined();
    expect(stalledFailed?.steps.map((s) => topState(s.state.value))).toContain("stalled");
  });

  it("a job whose last task died finishes by its tolerance instead of hanging", () => {
    // Every step that answered the last open task with a dead letter ended the job at once.
    let endedByDeath = 0;
    for (const path of paths) {
      path.steps.forEach((step, n) => {
        const event = step.event as JobEvent;
        if (event.type !== "results.received" || !event.entries.some((e) => e.dead)) return;
        const before = path.steps[n - 1]?.state;
        const c = step.state.context;
        if (!before || !["running", "stalled"].includes(topState(before.value))) return;
        if (c.done + c.failed + c.dead !== c.total) return;
        endedByDeath++;
        const top = topState(step.state.value);
        const within = c.failed + c.dead <= Math.floor(settings.maxFailures * c.total);
        expect(top).toBe(within ? "succeeded" : "failed");
        if (!within) expect(c.reason).toMatch(/tasks failed or died/);
      });
    }
    expect(endedByDeath).toBeGreaterThan(0);
    // Both ends are reached that way: one dead letter is tolerated, a dead and a failure are not.
    const run = (...entries: Array<Array<Record<string, unknown>>>) => {
      const actor = createActor(jobMachine, { input }).start();
      actor.send({ type: "submit.committed" });
      for (const [n, e] of entries.entries()) {
        actor.send({ type: "results.received", entries: e as never, at: 100 + n });
      }
      const snapshot = actor.getSnapshot();
      actor.stop();
      return snapshot;
    };
    expect(run([ok(0), ok(1)], [died(2)]).value).toEqual({ succeeded: "recording" });
    const failed = run([ok(0), { i: 1, ok: false }], [died(2)]);
    expect(failed.value).toEqual({ failed: "recording" });
    expect(failed.context).toMatchObject({ done: 1, failed: 1, dead: 1 });
  });

  it("a redrive after a dead answer reduces dead and lets the task be answered again", () => {
    // On every generated path: a redrive marker forgets a dead answer, and only a dead one.
    let redriven = 0;
    for (const path of paths) {
      path.steps.forEach((step, n) => {
        const event = step.event as JobEvent;
        if (event.type !== "results.received" || !event.entries.some((e) => e.redrive)) return;
        const previous = path.steps[n - 1]?.state;
        if (!previous) throw new Error("a path starts with a results batch");
        const before = previous.context;
        const after = step.state.context;
        if (!["running", "stalled"].includes(topState(previous.value))) return;
        if (bit(before.deadBits, 2)) {
          redriven++;
          expect(after.dead).toBe(before.dead - 1);
          expect(bit(after.answered, 2)).toBe(false);
          expect(bit(after.deadBits, 2)).toBe(false);
        } else {
          expect([after.done, after.failed, after.dead]).toEqual([before.done, before.failed, before.dead]);
        }
      });
    }
    expect(redriven).toBeGreaterThan(0);
    // And replayed on a live actor: died, redriven, answered again → succeeded with no dead.
    const actor = createActor(jobMachine, { input }).start();
    actor.send({ type: "submit.committed" });
    actor.send({ type: "results.received", entries: [ok(0), died(2)], at: 100 });
    expect(actor.getSnapshot().context).toMatchObject({ done: 1, dead: 1 });
    actor.send({ type: "results.received", entries: [redrive(2)], at: 200 });
    expect(actor.getSnapshot().context).toMatchObject({ done: 1, dead: 0 });
    expect(actor.getSnapshot().value).toBe("running");
    actor.send({ type: "results.received", entries: [ok(1), ok(2)], at: 300 });
    expect(actor.getSnapshot().value).toEqual({ succeeded: "recording" });
    expect(actor.getSnapshot().context).toMatchObject({ done: 3, failed: 0, dead: 0 });
    actor.stop();
  });

  it("resumes a committed job in running or stalled, and a finished one in its recorded end", () => {
    for (const [resumeFrom, expected] of [
      ["running", "running"],
      ["stalled", "stalled"],
      ["succeeded", { succeeded: "recorded" }],
      ["failed", { failed: "recorded" }],
    ] as const) {
      const actor = createActor(jobMachine, {
        input: { ...input, resumeFrom, counts: { done: 3, failed: 0, dead: 0 } },
      }).start();
      expect(actor.getSnapshot().value).toEqual(expected);
      actor.stop();
    }
  });
});

describe("job machine: rate, ETA and the stall clock", () => {
  const many: JobInput = { ...input, total: 1000, settings: { ...settings, stallAfterMs: 300 } };
  const start = () => {
    const actor = createActor(jobMachine, { input: many }).start();
    return actor;
  };
  const answers = (from: number, to: number) => Array.from({ length: to - from }, (_, n) => ok(from + n));

  it("the stall clock starts at the commit, not when the actor was created", () => {
    const actor = start();
    // A submit that took longer than stallAfterMs: committed at 500.
    actor.send({ type: "submit.committed", at: 500 });
    actor.send({ type: "clock.tick", now: 600 });
    expect(actor.getSnapshot().value).toBe("running");
    actor.send({ type: "clock.tick", now: 800 });
    expect(actor.getSnapshot().value).toBe("stalled");
    actor.stop();
  });

  it("measures the rate from the first answer on: a steady job's ETA is right at once", () => {
    const actor = start();
    actor.send({ type: "submit.committed", at: 0 });
    // Workers took 400 ms to find the job and finish their first tasks; then 100 tasks per 100 ms.
    actor.send({ type: "results.received", entries: answers(0, 100), at: 400 });
    expect(actor.getSnapshot().context.etaMs).toBeNull();
    actor.send({ type: "results.received", entries: answers(100, 200), at: 500 });
    // 800 left at 1000 tasks/s.
    expect(actor.getSnapshot().context.etaMs).toBeCloseTo(800, -1);
    actor.stop();
  });

  it("a replayed backlog is counted but is not a rate sample", () => {
    const actor = createActor(jobMachine, {
      input: { ...many, now: 10_000, resumeFrom: "running" },
    }).start();
    actor.send({ type: "results.received", entries: answers(0, 600), at: 10_005, replay: true });
    expect(actor.getSnapshot().context).toMatchObject({ done: 600, etaMs: null, throughput: 0 });
    actor.send({ type: "results.received", entries: answers(600, 700), at: 10_105 });
    // 100 tasks in 100 ms after the replay: 300 left at 1000/s, not ~0 from 700 in 105 ms.
    expect(actor.getSnapshot().context.etaMs).toBeCloseTo(300, -1);
    actor.stop();
  });
});

/** Why a transition of the job machine is never taken by a replay: none, every one is. */
const unreachable: Record<string, string> = {};

describe("job machine: transition coverage", () => {
  it("the replays take every transition of the machine (guarded ones, fallbacks and ignores included)", () => {
    const recorder = coverage;
    // Paths no test above replayed (this test run alone, or a filter) are replayed here.
    for (const path of replayed) if (!covered.has(path)) replayOnActor(path, recorder.inspect);
    expect(transitionsOf(jobMachine)).toHaveLength(32);
    expect(recorder.missing(unreachable)).toEqual([]);
    // Nothing listed as unreachable is taken after all.
    for (const key of Object.keys(unreachable)) expect(recorder.taken.has(key), key).toBe(false);
  });
});

const bit = (bits: Uint8Array, i: number) => ((bits[i >> 3] ?? 0) & (1 << (i & 7))) !== 0;
const popcount = (bits: Uint8Array) => {
  let n = 0;
  for (const byte of bits) for (let b = byte; b; b >>= 1) n += b & 1;
  return n;
};
