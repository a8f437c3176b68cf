/**
 * A supervisor whose wall clock is stepped back (NTP stepping a clock that
 * ran ahead) by more than its job's stall window, on both brokers: a job
 * whose task answers nothing still stalls a stall window of real time after
 * its last progress, and its snapshot says when that was on the wall clock
 * as it reads now. The job's clock is the runtime's steady clock
 * (kernel/clock.ts `steadyClock`), which the step does not move; on the wall
 * clock the step held the stall back by the step (a minute here). Its
 * progress, written a second apart, is written a second after an answer,
 * not a step later. Oracles:
 * the job's record writes as the store hands them out, and the stepped clock.
 */
import { describe, expect, it } from "vitest";
import { heldWorker, leaseBenches, onOwnBench } from "../harness/lease-takeover.ts";
import { steppedClock } from "../harness/stepped-clock.ts";
import { waitUntil, within } from "../harness/wait.ts";

const stallAfterMs = 1000;
const stepMs = 60_000;

describe.each(leaseBenches)(
  "a supervisor whose clock is stepped back past its job's stall window ($name)",
  ({ make }) => {
    it(
      "stalls its silent job a stall window after its last progress, in real time",
      () =>
        onOwnBench(make, async (bench, heldGate) => {
          const release = heldGate();
          const queue = "q";
          await heldWorker(bench, queue, () => release.opened);
          const { clock, step } = steppedClock();
          const a = await bench.runtime({ clock });
          const job = await a.rt.jobs.submit({ queue, tasks: [1], lane: false, stallAfterMs });
          await waitUntil(async () => (await a.broker.getRecord(job.id))?.record.status === "running", {
            timeoutMs: 10_000,
            message: "the job's commit stored",
          });
          const history = await bench.followRecords();
          step(-stepMs);
          // Its stall clock started at its commit, before the step: due within a stall window, seen
          // within a tick (a quarter of it) more; room for a machine busy with other files.
          await waitUntil(() => history.of(job.id).some(({ record }) => record.status === "stalled"), {
            timeoutMs: stallAfterMs + 4000,
            message: "the job's stall written",
          });
          const stalled = job.snapshot();
          expect(stalled.status).toBe("stalled");
          // Its last progress (its commit) a stall window ago or a little more on the stepped wall
          // clock, not a minute ahead of it.
          const idleMs = clock.now() - stalled.lastProgressAt;
          expect(idleMs).toBeGreaterThanOrEqual(stallAfterMs);
          expect(idleMs).toBeLessThan(stallAfterMs + 10_000);
          release.open();
          expect(await within(job.done(), 20_000)).toMatchObject({ status: "succeeded", done: 1 });
          history.stop();
        }),
      60_000,
    );

    // Its progress writes are a second apart on the clock the record is stamped with: after a
    // step back, the next one waited for the wall clock to come back to a second past the last
    // (a minute here), the counts it carried unwritten meanwhile.
    it(
      "writes its progress within a second or so of an answer, not a step later",
      () =>
        onOwnBench(make, async (bench, heldGate) => {
          const gates = [heldGate(), heldGate(), heldGate()];
          const queue = "q";
          await heldWorker(bench, queue, (p) => gates[p]!.opened, 3);
          const { clock, step } = steppedClock();
          const a = await bench.runtime({ clock });
          const job = await a.rt.jobs.submit({ queue, tasks: [0, 1, 2], lane: false, stallAfterMs: 60_000 });
          const history = await bench.followRecords();
          const written = (done: number) =>
            history.of(job.id).some(({ record }) => (record.counts as { done: number }).done === done);
          gates[0]!.open();
          await waitUntil(() => written(1), {
            timeoutMs: 10_000,
            message: "the first answer's progress written",
          });
          step(-stepMs);
          gates[1]!.open();
          await waitUntil(() => written(2), {
            timeoutMs: 10_000,
            message: "the second answer's progress written after the step back",
          });
          gates[2]!.open();
          expect(await within(job.done(), 20_000)).toMatchObject({ status: "succeeded", done: 3 });
          history.stop();
        }),
      60_000,
    );
  },
);
