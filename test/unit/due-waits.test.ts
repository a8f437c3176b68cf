/**
 * A worker's wait for a delayed job's due time (`api/due-waits.ts`). The
 * count of the job's visible tasks is a server round trip; what happens
 * while it is read must not be lost: a stop or a cancel (the wait would
 * otherwise run on to the due time, a day away, holding `rt.stop()` and the
 * process), and a write of the job's record (a redrive whose task the count
 * did not see yet). The oracle is the fake's own log of counts asked for,
 * and a bound far below the due time.
 */
import { describe, expect, it } from "vitest";
import { DueWaits } from "../../src/api/due-waits.ts";
import { realClock } from "../../src/kernel/clock.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { record } from "./fake-job-port.ts";

type Counts = { waiting: number; held: number; redelivered: number };

/** Counts answered by the test: each call waits for `answer`. */
const manualCounts = () => {
  const asked: Array<(counts: Counts) => void> = [];
  return {
    asked,
    port: {
      consumerCounts: () => new Promise<Counts | undefined>((resolve) => asked.push(resolve)),
    },
  };
};

const nothingVisible: Counts = { waiting: 0, held: 0, redelivered: 0 };
const oneVisible: Counts = { waiting: 1, held: 0, redelivered: 0 };

/** Resolves with "ended", or "still waiting" after `ms`. */
const within = (promise: Promise<void>, ms: number) =>
  Promise.race([
    promise.then(() => "ended" as const),
    new Promise<"still waiting">((resolve) => setTimeout(() => resolve("still waiting"), ms)),
  ]);

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

describe("DueWaits", () => {
  const dueTomorrow = () => record({ runAt: Date.now() + 86_400_000 });

  it("a stop while the count is read ends the wait, not the due time", async () => {
    const counts = manualCounts();
    const waits = new DueWaits(counts.port, realClock, silentLogger());
    const stop = new AbortController();
    const waiting = waits.until(dueTomorrow(), stop.signal);
    await tick();
    expect(counts.asked).toHaveLength(1);
    stop.abort();
    counts.asked[0]!(nothingVisible);
    expect(await within(waiting, 500)).toBe("ended");
  });

  it("a record write while the count is read counts again", async () => {
    const counts = manualCounts();
    const waits = new DueWaits(counts.port, realClock, silentLogger());
    const job = dueTomorrow();
    const waiting = waits.until(job, new AbortController().signal);
    await tick();
    // The redrive's write is heard before the count's answer, which predates its task.
    waits.wake(job);
    counts.asked[0]!(nothingVisible);
    await tick();
    expect(counts.asked).toHaveLength(2);
    counts.asked[1]!(oneVisible);
    expect(await within(waiting, 500)).toBe("ended");
  });

  it("waits, with nothing visible, until woken; then counts again", async () => {
    const counts = manualCounts();
    const waits = new DueWaits(counts.port, realClock, silentLogger());
    const job = dueTomorrow();
    const waiting = waits.until(job, new AbortController().signal);
    await tick();
    counts.asked[0]!(nothingVisible);
    expect(await within(waiting, 100)).toBe("still waiting");
    expect(counts.asked).toHaveLength(1);
    waits.wake(job);
    await tick();
    expect(counts.asked).toHaveLength(2);
    counts.asked[1]!(oneVisible);
    expect(await within(waiting, 500)).toBe("ended");
  });

  it("a record write naming a new redrive ends the wait: its task is published after that write", async () => {
    const counts = manualCounts();
    const waits = new DueWaits(counts.port, realClock, silentLogger());
    const job = dueTomorrow();
    const waiting = waits.until(job, new AbortController().signal);
    await tick();
    counts.asked[0]!(nothingVisible);
    // Another write of the job (progress) counts again and waits on.
    waits.wake(job);
    await tick();
    counts.asked[1]!(nothingVisible);
    expect(await within(waiting, 100)).toBe("still waiting");
    // The redrive's write, before its task: the count would find nothing and sleep till tomorrow.
    waits.wake({ ...job, redrive: "r1" });
    expect(await within(waiting, 500)).toBe("ended");
  });

  it("a job due now is not counted at all", async () => {
    const counts = manualCounts();
    const waits = new DueWaits(counts.port, realClock, silentLogger());
    await waits.until(record({ runAt: Date.now() + 500 }), new AbortController().signal);
    expect(counts.asked).toHaveLength(0);
  });
});
