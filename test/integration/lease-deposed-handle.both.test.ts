/**
 * A job's supervisor refused (`Deposed`) by its record's fence, on both
 * brokers: its clock stands still while its progress write is held back (a
 * clock set back, an event loop stall: by its own clock it still holds its
 * lease), another runtime takes the job over and names itself in the
 * record. The old supervisor's write meets that name and is refused, and it
 * steps down. Said (`stepDown`, job-actor.ts; CHANGELOG; architecture.md "A
 * taker fences the record"): its handles wait for the end the record gives.
 * The step-down stops its actor with no end recorded, and a handle's end is
 * its actor's (`whenRecorded`): its `done()` rejects ("job supervision
 * stopped before the job ended"), and so does a `cancel()` through it, the
 * cancel written. Its `results()` and `subscribe()` are to give every
 * answer and that end, as a watching runtime's handle does. Oracles: the record as the store hands it out (who named
 * the supervisor, the end stored) and the worker's ledger.
 */
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/kernel/clock.ts";
import type { FaultBench } from "../harness/fault-runtimes.ts";
import {
  commitStored,
  endStored,
  heldWorker,
  holdWrites,
  leaseBenches,
  onOwnBench,
  takeStored,
} from "../harness/lease-takeover.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const leaseMs = 2000;

/** A's job, taken over by B and A deposed: its task 2 answers once `release` opens. */
const deposed = async (bench: FaultBench, release: { opened: Promise<void> }) => {
  const aGo = gate();
  const queue = "q";
  const committed = gate();
  const answered = await heldWorker(bench, queue, (n) => (n === 1 ? committed.opened : release.opened));
  // A's clock moves only when the test moves it: stood still, A holds its lease by it.
  const clock = new ManualClock(Date.now());
  const aLog = capturedLog("warn");
  const a = await bench.runtime({ clock, logger: aLog.logger, jobs: { leaseMs, takeOver: false } });
  const aWriting = holdWrites(a, "progress", aGo.opened, "first");
  try {
    const job = await a.rt.jobs.submit({ queue, tasks: [1, 2], lane: false, stallAfterMs: 60_000 });
    const history = await bench.followRecords();
    await commitStored(a, job.id);
    committed.open();
    await waitUntil(() => answered.length === 1 && job.snapshot().done === 1, {
      timeoutMs: 10_000,
      message: "task 1 answered and counted by A",
    });
    // A's progress write is due a second on, on its clock; it is then held back.
    clock.advance(1000);
    expect(await within(aWriting, 10_000), "A writing the job's progress").not.toBe("never");
    const b = await bench.runtime({ jobs: { leaseMs } });
    await takeStored(history, job.id, b);
    aGo.open();
    await waitUntil(() => aLog.lines.some(({ msg }) => msg.includes("stepping down")), {
      timeoutMs: 10_000,
      message: "A refused and stepping down",
    });
    return { job, history };
  } finally {
    aGo.open();
  }
};

/** How a handle's call settled, in one line. */
const settled = <T>(call: Promise<T>, said: (value: T) => string) =>
  within(
    call.then(
      said,
      (error: unknown) => `rejected: ${error instanceof Error ? error.message : String(error)}`,
    ),
    20_000,
  );

describe.each(leaseBenches)("a supervisor deposed by its job's taker ($name)", ({ make }) => {
  it("has its done() resolve with the end its taker recorded", async () => {
    await onOwnBench(make, async (bench, heldGate) => {
      const release = heldGate();
      const { job, history } = await deposed(bench, release);
      release.open();
      const end = await endStored(history, job.id, "succeeded");
      expect(end.record).toMatchObject({ counts: { done: 2, failed: 0, dead: 0 } });
      const outcome = await settled(job.done(), (s) => `resolved ${s.status} done ${s.done}`);
      expect(outcome, "A's done()").toBe("resolved succeeded done 2");
      history.stop();
    });
  }, 90_000);

  it("has a cancel through its handle resolve with the cancel it wrote", async () => {
    await onOwnBench(make, async (bench, heldGate) => {
      const release = heldGate();
      const { job, history } = await deposed(bench, release);
      const outcome = await settled(job.cancel("enough"), (s) => `resolved ${s.status} ${String(s.reason)}`);
      const end = await endStored(history, job.id, "failed");
      expect(end.record, "the end stored").toMatchObject({ status: "failed", reason: "cancelled: enough" });
      expect(outcome, "A's cancel()").toBe("resolved failed cancelled: enough");
      history.stop();
    });
  }, 90_000);

  it("has its results() and subscribe() give every answer and the end its taker recorded", async () => {
    await onOwnBench(make, async (bench, heldGate) => {
      const release = heldGate();
      const { job, history } = await deposed(bench, release);
      const heard: string[] = [];
      const off = job.subscribe((s) => heard.push(`${s.status} done ${s.done}`));
      const reading = (async () => {
        const got: number[] = [];
        for await (const r of job.results()) if (r.ok) got.push(Number(r.result));
        return got.sort();
      })();
      release.open();
      expect(await within(reading, 20_000), "A's results()").toEqual([1, 2]);
      await waitUntil(() => heard.includes("succeeded done 2"), {
        timeoutMs: 10_000,
        message: "A's subscriber told the end",
      });
      expect(job.snapshot(), "A's snapshot()").toMatchObject({ status: "succeeded", done: 2 });
      off();
      history.stop();
    });
  }, 90_000);

  // Only read: before, its snapshot showed the record's end only once another call of the
  // handle (`done()`, `results()`) had started the wait for it, and showed the job running for
  // good (found by a review).
  it("has its snapshot(), only read, show the end its taker recorded", async () => {
    const bench = await make();
    const release = gate();
    try {
      const { job, history } = await deposed(bench, release);
      release.open();
      await waitUntil(() => history.of(job.id).some(({ record }) => record.status === "succeeded"), {
        timeoutMs: 30_000,
        message: "the job's end stored",
      });
      const end = history.of(job.id).find(({ record }) => record.status === "succeeded");
      expect(end?.record).toMatchObject({ counts: { done: 2, failed: 0, dead: 0 } });
      // The end is stored: the handle's snapshot has it within a few record-watch deliveries.
      const shown = await waitUntil(() => job.snapshot().status === "succeeded", {
        timeoutMs: 10_000,
        message: "A's snapshot() showing the end",
      }).then(
        () => "succeeded",
        () => `${job.snapshot().status} done ${job.snapshot().done}`,
      );
      expect(shown, "A's snapshot(), 10 s after the end was stored").toBe("succeeded");
      history.stop();
    } finally {
      release.open();
      await bench.dispose();
    }
  }, 90_000);
});
