import { describe, expect, it } from "vitest";
import { raiseEndCounts } from "../../src/effects/finalize-job.ts";
import { TransientBrokerError } from "../../src/kernel/errors.ts";
import type { JobCounts } from "../../src/kernel/job-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { fakeJobPort, record } from "./fake-job-port.ts";

/**
 * The answers a supervisor counted, raised onto an end another runtime recorded with fewer
 * (a cancel from a view behind them). The oracle is the fake port's stored record.
 */
const outage = () => {
  throw new TransientBrokerError({ message: "no answer", operation: "job.record.get" });
};

const cancelled = record({
  phase: "committed",
  status: "failed",
  reason: "cancelled: from elsewhere",
  counts: { done: 0, failed: 0, dead: 0 },
  updatedAt: 5000,
  finishedAt: 5000,
});

/** `counted` raised onto `cancelled` in `fake`'s store, until `signal` aborts. */
const raise = (
  fake: ReturnType<typeof fakeJobPort>,
  counted: JobCounts,
  signal = new AbortController().signal,
) => raiseEndCounts(fake.port, cancelled, counted, 6000, silentLogger(), signal);

describe("raiseEndCounts", () => {
  it("raises the counts onto the end, tried again through an outage", async () => {
    const fake = fakeJobPort();
    fake.put(cancelled);
    fake.failNext("getRecord", outage);
    fake.failNext("getRecord", outage);
    const counted = { done: 3, failed: 0, dead: 1 };
    await raise(fake, counted);
    expect(fake.records.get("j1")!.record).toMatchObject({
      status: "failed",
      reason: "cancelled: from elsewhere",
      counts: counted,
      finishedAt: 5000,
    });
  });

  it("stops trying once its signal aborts, nothing written", async () => {
    const fake = fakeJobPort();
    fake.put(cancelled);
    const stop = new AbortController();
    // The outage outlasts the retries the test waits for: the third read aborts the signal.
    let reads = 0;
    for (let i = 0; i < 100; i++)
      fake.failNext("getRecord", () => {
        if (++reads === 3) stop.abort();
        return outage();
      });
    await raise(fake, { done: 3, failed: 0, dead: 0 }, stop.signal);
    expect(reads).toBe(3);
    expect(fake.records.get("j1")!.record).toEqual(cancelled);
  });

  it("writes nothing onto another end recorded since (a redrive reopened the job, which ended again)", async () => {
    const fake = fakeJobPort();
    fake.put(cancelled);
    // Meanwhile the dead task was redriven and the job ended again, succeeded, none dead.
    const again = record({
      phase: "committed",
      status: "succeeded",
      counts: { done: 4, failed: 0, dead: 0 },
      redrive: "r1-2",
      updatedAt: 9000,
      finishedAt: 9000,
    });
    fake.failNext("getRecord", () => {
      fake.put(again);
      outage();
    });
    await raise(fake, { done: 2, failed: 0, dead: 2 });
    expect(fake.records.get("j1")!.record).toEqual(again);
  });
});
