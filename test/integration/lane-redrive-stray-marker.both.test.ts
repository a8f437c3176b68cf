import { expect, it } from "vitest";
import { describeOnBothBenches } from "../harness/fault-runtimes.ts";
import { redriveHeld } from "../harness/lane-redrive-held.ts";
import { waitUntil, within } from "../harness/wait.ts";

/**
 * A redrive of a 1-task lane job refused at its record write because the
 * key was submitted again since its reads (lane-redrive-submit-race) "takes
 * nothing back", its markers "take back only deaths of the old submit's
 * letters" (architecture.md, "A lane job of one task"). Its markers named no
 * submit, so the next submit's job read them as its own, and a marker
 * takes back a dead answer naming no letter (`takesBack`): the next
 * submit's task, dead with its letter refused by the store (its dead answer
 * stored alone by the dead-letter processor), was taken back by the old
 * redrive's marker landing after it. They name the submit read now. The
 * oracles: the handler's ledger (the new submit's task ran and died) and
 * the dead answer the server holds, read raw.
 */

const BOUND_MS = 20_000;
/** A task whose letter is 2 KB or more: the store refuses it once `refuseLetters` is on. */
const BIG = "t".repeat(2048);

interface RawEntry {
  readonly i: number;
  readonly ok?: boolean;
  readonly dead?: boolean;
  readonly redrive?: boolean;
  readonly s?: string;
  readonly l?: number | number[];
}

describeOnBothBenches(
  "a refused lane redrive's markers and the next submit of the key on the %s broker",
  (use) => {
    it("the next submit's task, dead with its letter refused, stays dead once the refused redrive's markers land", async () => {
      const queue = "stray-marker";
      // The redrive held before its markers; the new submit's runs fail, once `held` opens.
      const { submitter, jobId, runs, held, submitAgain, release } = await redriveHeld(
        use,
        queue,
        "publishResults",
        {
          task: BIG,
          newRuns: "fail",
        },
      );
      const job = await submitAgain();
      const submit = (await submitter.rt.jobs.record(jobId))?.submitId;
      expect(submit).toMatch(/./);

      // Its letter refused, the new submit's task dies: its dead answer is stored alone.
      const undo = await use.bench.refuseLetters();
      held.open();
      const raw = async () => (await use.bench.rawResults(queue, jobId)) as unknown as RawEntry[];
      try {
        await waitUntil(async () => (await raw()).some((e) => e.dead === true && e.s === submit), {
          timeoutMs: BOUND_MS,
          message: () => `the new submit's task to die (runs ${JSON.stringify(runs)})`,
        });
        expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
      } finally {
        await undo();
      }
      expect(runs.filter((r) => r === "new")).toEqual(["new", "new", "new", "new", "new"]);
      const death = (await raw()).find((e) => e.dead === true && e.s === submit);
      expect(death?.l).toBeUndefined();

      // Read before the old redrive goes on: the task dead, as stored.
      const reader = await use.runtime();
      const resultsOf = async () => {
        const handle = await reader.rt.jobs.get(jobId);
        const read: unknown[] = [];
        const reading = (async () => {
          for await (const r of handle!.results()) read.push([r.index, r.ok, r.ok ? undefined : r.dead]);
        })();
        expect(await within(reading, BOUND_MS)).not.toBe("never");
        return read;
      };
      expect(await resultsOf()).toEqual([[0, false, true]]);

      // The old submit's redrive, let go: refused, the key submitted again.
      expect(await release()).toMatchObject({
        _tag: "InvalidArgument",
        field: "id",
        message: expect.stringMatching(/submitted again/),
      });
      // Stored after the new submit's death: the refused redrive's marker, naming the old submit.
      const stored = await raw();
      const at = stored.indexOf(stored.find((e) => e.dead === true && e.s === submit)!);
      expect(stored.slice(at + 1).map((e) => [e.i, e.redrive, e.s !== undefined && e.s !== submit])).toEqual([
        [0, true, true],
      ]);

      // The new submit's job, read again: its task died (stored so, and nothing of it ran since).
      expect(await resultsOf()).toEqual([[0, false, true]]);
    });
  },
);
