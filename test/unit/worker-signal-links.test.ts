/**
 * On Node 20 every `AbortSignal.any` leaves a weak reference in each of its
 * sources' signals, never pruned (~85 bytes). A worker that joined a signal
 * of its own (or the runtime's) into a composite for every job it pulled, or
 * every handler that read its signal, grew for its whole life; so did the
 * memory broker's stop signal, for every job's results reader and task loop;
 * so did the runtime's stop signal for each `results()` of a job. Oracle: the
 * composites the worker's code makes, read from the platform call itself,
 * and how many of them each source signal feeds.
 */
import { getEventListeners } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { JobEnd } from "../../src/api/job-end.ts";
import { partsOf } from "../../src/api/runtime.ts";
import { createTestRuntime } from "../../src/testing.ts";

const platformAny = AbortSignal.any;
const PlatformController = globalThis.AbortController;
afterEach(() => {
  AbortSignal.any = platformAny;
  globalThis.AbortController = PlatformController;
});

describe("the signals of a worker and of a job's feed", () => {
  it("no signal of the worker, the broker or the runtime feeds a composite for each job or each handler", async () => {
    const rt = await createTestRuntime();
    const fed = new Map<AbortSignal, number>();
    AbortSignal.any = (signals: Iterable<AbortSignal>) => {
      const sources = [...signals];
      const stack = new Error().stack ?? "";
      // A worker's code, and a job's feed (its results reader).
      if (/worker(s|-[a-z]+)\.ts|running-tasks\.ts|job-end\.ts|job-effects\.ts|job-feed\.ts/.test(stack))
        for (const source of sources) fed.set(source, (fed.get(source) ?? 0) + 1);
      return platformAny.call(AbortSignal, sources);
    };
    const worker = rt.workers.start<number, number>({
      queue: "q",
      handler: (task, { signal }) => (signal.aborted ? -1 : task.payload),
    });
    const jobs = 40;
    for (let n = 0; n < jobs; n++) await (await rt.jobs.submit({ queue: "q", tasks: [n, n + 1] })).done();
    await worker.stop();
    await rt.stop();
    // Each composite's sources are the job's or the task's own: none is fed once per job.
    expect(Math.max(0, ...fed.values())).toBeLessThan(jobs);
    expect(fed.size).toBeGreaterThan(jobs); // the handlers did read their signals
  });

  it("results() of a job that succeeded whole, its answers kept by its actor, joins no signal of the runtime's", async () => {
    const rt = await createTestRuntime();
    let joined = 0;
    AbortSignal.any = (signals: Iterable<AbortSignal>) => {
      if (/job-handle\.ts|job-answers\.ts/.test(new Error().stack ?? "")) joined++;
      return platformAny.call(AbortSignal, [...signals]);
    };
    const worker = rt.workers.start<number, number>({ queue: "q", handler: (task) => task.payload * 2 });
    const jobs = 40;
    for (let n = 0; n < jobs; n++) {
      const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [n, n + 1] });
      await job.done();
      const answers: Array<[number, unknown]> = [];
      for await (const r of job.results()) answers.push([r.index, r.ok ? r.result : r.error]);
      // The answers themselves, from the payloads submitted.
      expect(answers.sort((a, b) => a[0] - b[0])).toEqual([
        [0, 2 * n],
        [1, 2 * (n + 1)],
      ]);
    }
    await worker.stop();
    await rt.stop();
    expect(joined).toBe(0);
  });

  it("a lane job's worker makes no abort controller for the job's end: nothing reads it", async () => {
    const rt = await createTestRuntime({ jobs: { lane: true } });
    let made = 0;
    globalThis.AbortController = class extends PlatformController {
      constructor() {
        super();
        if (/worker(s|-[a-z]+)\.ts|running-tasks\.ts|job-end\.ts/.test(new Error().stack ?? "")) made++;
      }
    };
    const worker = rt.workers.start<number, number>({ queue: "q", handler: (task) => task.payload * 2 });
    const jobs = 40;
    for (let n = 0; n < jobs; n++) await (await rt.jobs.submit({ queue: "q", tasks: [n] })).done();
    await worker.stop();
    await rt.stop();
    expect(made).toBeLessThan(jobs);
  });

  it("a worker stopped before its runtime leaves no listener on the runtime's stop signal", async () => {
    const rt = await createTestRuntime();
    const { stopping } = partsOf(rt).core;
    const before = getEventListeners(stopping, "abort").length;
    try {
      // The workers of a service that starts and stops them for its whole life.
      for (let n = 0; n < 20; n++) {
        const worker = rt.workers.start<number, number>({
          queue: `q${n % 2}`,
          handler: (task) => task.payload,
        });
        await (await rt.jobs.submit({ queue: `q${n % 2}`, tasks: [n] })).done();
        await worker.stop();
      }
      expect(getEventListeners(stopping, "abort").length).toBe(before);
    } finally {
      await rt.stop();
    }
  });

  it("events readers on the memory broker join no signal of the broker's, however many are opened", async () => {
    const rt = await createTestRuntime();
    let joined = 0;
    AbortSignal.any = (signals: Iterable<AbortSignal>) => {
      if (/memory-records\.ts/.test(new Error().stack ?? "")) joined++;
      return platformAny.call(AbortSignal, [...signals]);
    };
    try {
      for (let n = 0; n < 20; n++) {
        const events = rt.jobs.events();
        await events.ready;
        await events.return();
      }
      expect(joined).toBe(0);
    } finally {
      await rt.stop();
    }
  });

  it("a job's end: its signal, read before or after the end, is aborted once, with an AbortError", () => {
    const before = new JobEnd();
    const early = before.signal;
    expect(early.aborted).toBe(false);
    before.abort();
    before.abort();
    expect(before.aborted).toBe(true);
    expect(early.aborted).toBe(true);
    expect((early.reason as DOMException).name).toBe("AbortError");
    const after = new JobEnd();
    after.abort();
    expect(after.signal.aborted).toBe(true);
    expect(after.signal).toBe(after.signal);
    expect(new JobEnd().aborted).toBe(false);
  });
});
