/**
 * A job's progress is written to its record at most once a second (the
 * supervisor's `writeWhenDue`, src/api/job-persist.ts). Its host's wall
 * clock set back a minute (NTP) must not hold the next write back a minute.
 * The oracle is the record as the memory server holds it, read through a
 * broker of the test's own, and the time the test let pass (`advance`).
 */
import { describe, expect, it } from "vitest";
import { createTestRuntime } from "../../src/api/runtime.ts";
import { ManualClock } from "../../src/kernel/clock.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";

describe("a job's progress write, its host's clock set back", () => {
  it("is written a second or so after the progress, not a step later", async () => {
    const clock = new ManualClock(Date.now());
    const server = createMemoryServer({ clock });
    const reader = createMemoryBroker({ server });
    const rt = await createTestRuntime({
      clock,
      broker: createMemoryBroker({ server }),
      jobs: { leaseMs: 30_000 },
    });
    /** Each task waits for the test to let it answer. */
    const gates: Array<() => void> = [];
    const worker = rt.workers.start<number, number>({
      queue: "q",
      concurrency: 1,
      handler: (t) => new Promise<number>((resolve) => gates.push(() => resolve(t.payload))),
    });
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [1, 2, 3], stallAfterMs: 600_000 });
    const settle = () => new Promise((resolve) => setTimeout(resolve, 5));
    /** Lets `ms` pass a second at a time, until the record says `done` tasks are done. */
    const recordedDone = async (done: number, ms: number): Promise<number | undefined> => {
      for (let passed = 0; ; passed += 1000) {
        const stored = await reader.getRecord(job.id);
        if (stored?.record.counts.done === done || passed >= ms) return stored?.record.counts.done;
        clock.advance(1000);
        for (let n = 0; n < 3; n++) await settle();
      }
    };
    const answerNext = async () => {
      for (let n = 0; n < 200 && gates.length === 0; n++) await settle();
      gates.shift()?.();
      for (let n = 0; n < 3; n++) await settle();
    };

    await answerNext();
    expect(await recordedDone(1, 5_000)).toBe(1);
    clock.step(-60_000);
    await answerNext();
    // 5 s after the second answer, with progress written at most once a second: written.
    expect(await recordedDone(2, 5_000), "the record's done count 5 s after the second answer").toBe(2);
    await answerNext();
    await worker.stop();
    await rt.stop();
    await reader.close();
  });
});
