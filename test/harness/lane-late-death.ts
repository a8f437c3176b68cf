import { expect } from "vitest";
import type { JobHandle } from "../../src/api/job-handle.ts";
import type { FaultBenchUse, FaultyRuntime } from "./fault-runtimes.ts";
import { gate, waitUntil } from "./wait.ts";

const BOUND_MS = 15_000;

/** What `lateDeathRolledBack` leaves: the rolled-back job and the worker's ledger of runs. */
export interface LateDeath {
  readonly submitter: FaultyRuntime;
  readonly jobId: string;
  /** The submit request, to submit the key again. */
  readonly request: { queue: string; tasks: string[]; idempotencyKey: string; backoff: number[] };
  /** Every run of the job's task: `old` while the first submit stood, `new` after `renew()`. */
  readonly runs: ReadonlyArray<"old" | "new">;
  /** From now on the task's runs are `new` ones: held until `held.open()`, then as `LateDeathOptions.newRuns` says. */
  renew(): void;
  readonly held: { open(): void };
  /** `renew()`, then the key submitted again: the same job, its task's `new` run started (held). */
  submitAgain(): Promise<JobHandle>;
}

export interface LateDeathOptions {
  /** The job's one task's payload (default `"t"`). */
  readonly task?: string;
  /** How a `new` run ends once `held` opens: it answers (default) or fails. */
  readonly newRuns?: "succeed" | "fail";
}

/**
 * A 1-task lane job's task publish that lands once its submitter found
 * nothing stored, before its rollback's mark: a worker runs it under the
 * rolled-back submit and it dies there (5 deliveries), its dead letter and
 * dead answer stored; the submit is then rolled back. Checked on the way:
 * the record rolled back, five old runs, the dead answer the server holds.
 * `beforeMark` runs once the task died, before the rollback's mark is written.
 */
export const lateDeathRolledBack = async (
  use: FaultBenchUse,
  queue: string,
  beforeMark?: (jobId: string) => Promise<void>,
  { task = "t", newRuns = "succeed" }: LateDeathOptions = {},
): Promise<LateDeath> => {
  const submitter = await use.runtime();
  const runner = await use.runtime();
  const runs: Array<"old" | "new"> = [];
  let era: "old" | "new" = "old";
  const held = gate();
  const w = runner.rt.workers.start<string, string>({
    queue,
    concurrency: 4,
    stopTimeoutMs: 2000,
    handler: async (task) => {
      if (task.payload === "prime") return "primed";
      runs.push(era);
      if (era === "old") throw new Error("fails while the first submit stands");
      await held.opened;
      if (newRuns === "fail") throw new Error("fails under the new submit");
      return "ok";
    },
  });
  use.after(async () => {
    held.open();
    await w.stop();
  });
  // A first lane job of the queue: the worker pulls the lane from then on.
  await (await submitter.rt.jobs.submit({ queue, tasks: ["prime"] })).done();

  const request = { queue, tasks: [task], idempotencyKey: `${queue}-1`, backoff: [0] };
  let landed = false;
  // The late publish lands once the submitter found nothing stored, before its mark: the
  // worker reads the record still naming that submit, runs the task and it dies (5 deliveries).
  submitter.faults.before("rollBack", async (jobId) => {
    if (landed) return;
    landed = true;
    await submitter.faults.land();
    await waitUntil(async () => (await use.bench.rawResults(queue, jobId)).some((e) => e.dead === true), {
      timeoutMs: BOUND_MS,
      message: () => `the late task to die (runs ${JSON.stringify(runs)})`,
    });
    await beforeMark?.(jobId);
  });
  submitter.faults.strand();
  await expect(submitter.rt.jobs.submit(request)).rejects.toThrow(/injected fault: publishTasks/);
  const { jobs } = await submitter.rt.jobs.list({ queue });
  const rolledBack = jobs.find((j) => j.phase === "rolledBack");
  expect(rolledBack).toMatchObject({ status: "failed", phase: "rolledBack", lane: true, total: 1 });
  const jobId = rolledBack!.id;
  expect(runs).toEqual(["old", "old", "old", "old", "old"]);
  // What the server holds of the rolled-back submit: its task's dead answer (and the markers of a
  // redrive `beforeMark` started, if any).
  const answers = (await use.bench.rawResults(queue, jobId)).filter((e) => e.redrive !== true);
  expect(answers.map((e) => [e.i, e.dead])).toEqual([[0, true]]);
  const renew = () => {
    era = "new";
  };
  const submitAgain = async () => {
    renew();
    const job = await submitter.rt.jobs.submit(request);
    expect(job.id).toBe(jobId);
    await waitUntil(() => runs.includes("new"), {
      timeoutMs: BOUND_MS,
      message: "the new submit's task to run",
    });
    return job;
  };
  return { submitter, jobId, request, runs, held, renew, submitAgain };
};
