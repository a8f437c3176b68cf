/**
 * `results()` (`readAllResults`, src/api/job-answers.ts) must list each task
 * as the job counts it (`countAnswers`, kernel/job-progress.ts): a marker
 * takes back a dead answer only. Two redrives of different sets (a = [0],
 * b = [0, 1]) read task 0's letter 10; a's marker takes task 0's death back,
 * a's copy runs and fails for good (a failure, not a death: no letter), and
 * b's marker, naming letter 10 too, lands only then (b was slow; its copy is
 * a's, kept once). The job counts task 0 failed; `results()` took that
 * failure back with b's marker (it holds failures and deaths alike, and a
 * failure names no letter, so `takesBack` says yes), and listed task 0 not
 * at all: a job over before the read is missing it, and a reader started
 * while the job ran waits for it for good. Oracles: results messages
 * written here to a memory server, and the counts worked out by hand.
 */

import { describe, expect, it } from "vitest";
import type { Actor } from "xstate";
import type { JobResults } from "../../src/adapters/job-results.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/adapters/memory/memory-broker.ts";
import { readAllResults } from "../../src/api/job-answers.ts";
import type { TaskResult } from "../../src/api/job-handle.ts";
import type { RuntimeCore } from "../../src/api/runtime-core.ts";
import { countAnswers, type ResultEntry } from "../../src/kernel/job-progress.ts";
import { LinkedControllers } from "../../src/kernel/signals.ts";
import type { JobMachine } from "../../src/machines/job.machine.ts";
import { gate, within } from "../harness/wait.ts";

const total = 2;
const stream: ResultEntry[][] = [
  [{ i: 1, ok: true }],
  [{ i: 0, ok: false, dead: true, l: 10 }],
  [{ i: 0, redrive: true, id: "a", l: [10] }],
  // a's copy of task 0 fails for good: a failure, no letter.
  [{ i: 0, ok: false }],
  // b's marker, late: task 0's counted answer is a failure, which no marker takes back.
  [{ i: 0, redrive: true, id: "b", l: [10] }],
];

/** A job actor as `readAllResults` reads it: its counts, and whether its end is recorded. */
const fakeActor = (recorded: boolean) => {
  const listeners = new Set<() => void>();
  const state = { recorded };
  const counts = { done: 1, failed: 1, dead: 0 };
  const actor = {
    getSnapshot: () => ({
      context: { jobId: "j1", queue: "q", total, ...counts, recorded: counts },
      value: state.recorded ? { failed: "recorded" } : "running",
      status: "active",
    }),
    subscribe: (observer: { next?: () => void }) => {
      const next = () => observer.next?.();
      listeners.add(next);
      return { unsubscribe: () => listeners.delete(next) };
    },
  } as unknown as Actor<JobMachine>;
  return {
    actor,
    end: () => {
      state.recorded = true;
      for (const l of [...listeners]) l();
    },
  };
};

const setUp = async () => {
  const server = createMemoryServer();
  const broker = createMemoryBroker({ server });
  const stop = new AbortController();
  const core = {
    options: { connection: { operationTimeoutMs: 5000 } },
    stopLinks: new LinkedControllers(stop.signal),
    stopping: stop.signal,
    logger: { warn: () => undefined, debug: () => undefined, info: () => undefined, error: () => undefined },
  } as unknown as RuntimeCore;
  for (const [n, entries] of stream.entries())
    await broker.publishResults("q", "j1", JSON.stringify(entries), `m${n}`);
  return {
    broker,
    core,
    close: async () => {
      stop.abort();
      await broker.close?.();
      server.close();
    },
  };
};

/** `broker`'s results read, calling `caughtUp` once it has read what the stream held (`pending` 0). */
const tellingCaughtUp = (broker: JobResults, caughtUp: () => void): Pick<JobResults, "readResults"> => ({
  readResults: (queue, jobId, onMessage, signal, onCaughtUp, fresh) =>
    broker.readResults(
      queue,
      jobId,
      (body, pending) => {
        onMessage(body, pending);
        if (pending === 0) caughtUp();
      },
      signal,
      () => {
        onCaughtUp?.();
        caughtUp();
      },
      fresh,
    ),
});

const said = (read: TaskResult<unknown>[]) =>
  read.map((r) => [r.index, r.ok ? "ok" : r.dead ? "dead" : "failed"]).sort();

describe("results() after a late marker of a task its redrive's copy failed", () => {
  it("the job counts task 0 failed", () => {
    const counted = countAnswers(
      { total, answered: new Uint8Array(1), deadBits: new Uint8Array(1) },
      stream.flat(),
    );
    expect(counted).toMatchObject({ done: 1, failed: 1, dead: 0 });
  });

  it("results() of the job over lists task 0 failed, as the job counts it", async () => {
    const { broker, core, close } = await setUp();
    try {
      const read: TaskResult<unknown>[] = [];
      for await (const r of readAllResults(core, broker, fakeActor(true).actor)) read.push(r);
      expect(said(read)).toEqual([
        [0, "failed"],
        [1, "ok"],
      ]);
    } finally {
      await close();
    }
  });

  it("results() started while the job ran ends once it is over, task 0 failed", async () => {
    const { broker, core, close } = await setUp();
    try {
      const { actor, end } = fakeActor(false);
      const read: TaskResult<unknown>[] = [];
      const caughtUp = gate();
      const reading = (async () => {
        for await (const r of readAllResults(core, tellingCaughtUp(broker, caughtUp.open), actor))
          read.push(r);
        return "ended" as const;
      })();
      // The reader catches up on the five messages, then the job's end is recorded.
      await caughtUp.opened;
      end();
      const outcome = await within(reading, 3000);
      expect({ outcome, read: said(read) }).toEqual({
        outcome: "ended",
        read: [
          [0, "failed"],
          [1, "ok"],
        ],
      });
    } finally {
      await close();
    }
  });
});
