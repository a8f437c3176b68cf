/**
 * Testing your handler with `jetstate-jobs/testing`: no NATS, no sleeping, each
 * test well under a second. `npx vitest run examples/03-testing-a-handler.test.ts`
 * (in your project: import from "jetstate-jobs" and "jetstate-jobs/testing").
 */
import { describe, expect, it } from "vitest";
import { PermanentError, type Task } from "../src/index.ts";
import { createTestRuntime, ManualClock, runJob } from "../src/testing.ts";

// ---- the code under test: an image-resize handler, its fetch injected ----

type Resize = { url: string; width: number };
type Resized = { url: string; bytes: number };

const resizeHandler =
  (fetchImage: (url: string) => Promise<Uint8Array>) =>
  async (task: Task<Resize>): Promise<Resized> => {
    const { url, width } = task.payload;
    // Retrying cannot fix a bad URL: fail the task at once.
    if (!URL.canParse(url)) throw new PermanentError(`not a URL: ${url}`);
    const image = await fetchImage(url); // a network error is transient: the task is retried
    return { url: `${url}?w=${width}`, bytes: Math.ceil(image.length / 4) };
  };

/** A fetch that fails the first time for URLs with "flaky" in them. */
const flakyFetch = () => {
  const calls = new Map<string, number>();
  const fetchImage = async (url: string) => {
    calls.set(url, (calls.get(url) ?? 0) + 1);
    if (url.includes("flaky") && calls.get(url) === 1) throw new Error("ECONNRESET");
    return new Uint8Array(4000);
  };
  return { fetchImage, calls };
};

/** The requirement: a handler's test runs in under a second. */
const underASecond = async (test: () => Promise<void>) => {
  const started = performance.now();
  await test();
  expect(performance.now() - started).toBeLessThan(1000);
};

const images: Resize[] = [
  { url: "https://img.example/cat.jpg", width: 200 },
  { url: "https://img.example/flaky/dog.jpg", width: 200 },
  { url: "not a url", width: 200 },
];

describe("resizeHandler", () => {
  it("retries a flaky fetch, fails a bad URL at once: the job succeeds within its tolerance", () =>
    underASecond(async () => {
      const { fetchImage, calls } = flakyFetch();
      const final = await runJob(resizeHandler(fetchImage), images, { job: { maxFailures: 0.5 } });
      expect(final).toMatchObject({ status: "succeeded", done: 2, failed: 1, dead: 0 });
      expect(calls.get("https://img.example/flaky/dog.jpg")).toBe(2); // retried once
      expect(calls.has("not a url")).toBe(false); // never fetched, never retried
    }));

  it("without a tolerance the bad URL fails the job, with the reason", () =>
    underASecond(async () => {
      const final = await runJob(resizeHandler(flakyFetch().fetchImage), images);
      expect(final.status).toBe("failed");
      expect(final.reason).toMatch(/1 of 3 tasks failed/);
    }));

  it("results: each task's resized URL, or its error", () =>
    underASecond(async () => {
      const rt = await createTestRuntime();
      try {
        const worker = rt.workers.start({ queue: "resize", handler: resizeHandler(flakyFetch().fetchImage) });
        const job = await rt.jobs.submit<Resize, Resized>({
          queue: "resize",
          tasks: images,
          maxFailures: 0.5,
          backoff: [0],
        });
        await job.done();
        await worker.stop();
        const results = [];
        for await (const r of job.results()) results.push(r);
        expect(results.sort((a, b) => a.index - b.index)).toMatchObject([
          { ok: true, result: { url: "https://img.example/cat.jpg?w=200", bytes: 1000 } },
          { ok: true, result: { url: "https://img.example/flaky/dog.jpg?w=200" } },
          { ok: false, error: "not a URL: not a url", dead: false },
        ]);
      } finally {
        await rt.stop();
      }
    }));

  it("no worker: the job stalls after a minute and fails after five more, on a ManualClock", () =>
    underASecond(async () => {
      const clock = new ManualClock();
      const rt = await createTestRuntime({ clock });
      try {
        const job = await rt.jobs.submit<Resize, Resized>({
          queue: "resize",
          tasks: images.slice(0, 1),
          stallAfterMs: 60_000,
          stalledTimeoutMs: 300_000,
        });
        clock.advance(59_000);
        expect(job.snapshot().status).toBe("running");
        clock.advance(1_000);
        expect(job.snapshot().status).toBe("stalled");
        clock.advance(300_000);
        const final = await job.done();
        expect(final).toMatchObject({ status: "failed", done: 0 });
        expect(final.reason).toMatch(/^stalled: no progress for 360000 ms/);
      } finally {
        await rt.stop();
      }
    }));
});
