/**
 * A job's supervisor refused by its record's fence (`Deposed`) and stepped
 * down, on both brokers, set up as lease-deposed-handle.both.test.ts does:
 * A's clock stands still while its progress write is held back, B takes the
 * job over and names itself, A's write meets that name and A steps down. Its
 * handles are then those of a runtime that only watches the job:
 * "`done()`, `subscribe()`'s end and `snapshot()` give the end the record
 * gets" (architecture.md). A caller who only polls `snapshot()` sees that
 * end too: before, it showed the record's end only once another call of the
 * handle (`done()`, `results()`) had started the wait for it
 * (`recordedEndWaits`, runtime-job-handle.ts), and the job ran for good
 * there (failed first; found by a review). Oracle: the job's record as the
 * store hands it out.
 */
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/kernel/clock.ts";
import { type FaultBench, memoryBench, natsBench } from "../harness/fault-runtimes.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const leaseMs = 2000;

/** A's job, taken over by B and A deposed: its task 2 answers once `release` opens. */
const deposed = async (bench: FaultBench, release: { opened: Promise<void> }) => {
  const aGo = gate();
  const queue = "q";
  const committed = gate();
  const w = await bench.runtime({ roles: ["worker"] });
  const answered: number[] = [];
  w.rt.workers.start<number, number>({
    queue,
    handler: async (task) => {
      if (task.payload === 1) await committed.opened;
      else await release.opened;
      answered.push(task.payload);
      return task.payload;
    },
  });
  // A's clock moves only when the test moves it: stood still, A holds its lease by it.
  const clock = new ManualClock(Date.now());
  const aLog = capturedLog("warn");
  const a = await bench.runtime({ clock, logger: aLog.logger, jobs: { leaseMs, takeOver: false } });
  const aWriting = gate();
  let aWrites = 0;
  a.faults.before("progress", async () => {
    if (aWrites++ > 0) return;
    aWriting.open();
    await aGo.opened;
  });
  try {
    const job = await a.rt.jobs.submit({ queue, tasks: [1, 2], lane: false, stallAfterMs: 60_000 });
    const history = await bench.followRecords();
    // Only a gate (the memory store's watch hands out no write made before it).
    await waitUntil(async () => (await a.broker.getRecord(job.id))?.record.phase === "committed", {
      timeoutMs: 10_000,
      message: "the job's commit stored",
    });
    committed.open();
    await waitUntil(() => answered.length === 1 && job.snapshot().done === 1, {
      timeoutMs: 10_000,
      message: "task 1 answered and counted by A",
    });
    // A's progress write is due a second on, on its clock; it is then held back.
    clock.advance(1000);
    expect(await within(aWriting.opened, 10_000), "A writing the job's progress").not.toBe("never");
    const b = await bench.runtime({ jobs: { leaseMs } });
    await waitUntil(
      () => history.of(job.id).some(({ record }) => record.supervisor === b.broker.leases.holder),
      { timeoutMs: 30_000, message: "B's take of the job's record stored" },
    );
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

describe.each([
  { name: "memory", make: memoryBench },
  { name: "nats", make: natsBench },
])("a supervisor deposed by its job's taker, its handle only read ($name)", ({ make }) => {
  it("has its snapshot() show the end its taker recorded", async () => {
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
