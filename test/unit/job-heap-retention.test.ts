/**
 * What a live job does not hold for its whole life (the issue's heap per
 * live job): its submit's abort controller once the submit has settled,
 * and a dead-task bitmap of its own before a task died. Measured on the
 * build with 2,000 idle lane jobs (heap snapshot deltas): ~0.8 KB and ~0.2
 * KB a job. Oracles: the platform's garbage collector (weak references to
 * the controllers made for jobs' effects, found by their stack), and the
 * machine's own context (one bitmap object shared by every job).
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterEach, describe, expect, it } from "vitest";
import { createActor } from "xstate";
import { jobMachine } from "../../src/machines/job.machine.ts";
import { createTestRuntime } from "../../src/testing.ts";
import { defaultSettings as settings } from "../harness/finished-records.ts";
import { waitUntil } from "../harness/wait.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const PlatformController = globalThis.AbortController;
afterEach(() => {
  globalThis.AbortController = PlatformController;
});

describe("a live job's heap", () => {
  it("holds no abort controller of its submit once the submit is committed", async () => {
    const made: WeakRef<AbortController>[] = [];
    globalThis.AbortController = class extends PlatformController {
      constructor() {
        super();
        // Made by job-effects.ts itself (its effects' controllers), not by what it calls.
        const caller = (new Error().stack ?? "").split("\n")[2] ?? "";
        if (/job-effects\.ts/.test(caller)) made.push(new WeakRef(this));
      }
    };
    const rt = await createTestRuntime();
    try {
      // No worker: the jobs stay live, committed and idle.
      const jobs = await Promise.all(
        Array.from({ length: 20 }, (_, n) => rt.jobs.submit({ queue: "q", tasks: [n, n + 1] })),
      );
      await waitUntil(() => jobs.every((j) => j.snapshot().status === "running"), {
        timeoutMs: 5000,
        message: "every job committed",
      });
      expect(made.length).toBe(20); // one per submit
      await waitUntil(
        () => {
          gc();
          return made.every((ref) => ref.deref() === undefined);
        },
        { timeoutMs: 5000, message: "the submits' controllers collected" },
      );
    } finally {
      await rt.stop();
    }
  });

  it("shares one empty dead-task bitmap between jobs until one of its tasks dies", () => {
    const job = (jobId: string, total: number) =>
      createActor(jobMachine, {
        input: { jobId, queue: "q", total, now: 0, resumeFrom: "running", settings },
      }).start();
    const small = job("a", 3);
    const big = job("b", 20_000);
    expect(small.getSnapshot().context.deadBits).toBe(big.getSnapshot().context.deadBits);
    expect(big.getSnapshot().context.deadBits.length).toBe(0);
    big.send({ type: "results.received", entries: [{ i: 9, ok: false, dead: true }], at: 1 });
    // Its own, of its size, with that task's bit; the other job's still the shared one.
    const own = big.getSnapshot().context.deadBits;
    expect(own.length).toBe(2500);
    expect(own[1]).toBe(0b0000_0010);
    expect(small.getSnapshot().context.deadBits.length).toBe(0);
  });
});
