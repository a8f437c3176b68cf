/**
 * The changes an audit made to the source that no test noticed (issue #13),
 * each as a text replacement. test/mutants/run.ts applies them one at a time
 * to a copy of the repository and expects the listed tests to fail.
 *
 * `search` must occur in `file` exactly once (or, with `all`, at least once):
 * when the code moves on, the runner stops and names the stale entry, so it
 * is updated rather than silently skipped.
 */
export interface Mutation {
  /** Short id, the letter of issue #13's list. */
  readonly id: string;
  readonly what: string;
  readonly file: string;
  readonly search: string;
  readonly replace: string;
  /** Replace every occurrence (default: exactly one must exist). */
  readonly all?: boolean;
  /** Test files (from the repository root) of which at least one must fail. */
  readonly tests: readonly string[];
}

const faults = "test/integration/faults.both.test.ts";
const guards = "test/unit/audit-guards.test.ts";

export const mutations: readonly Mutation[] = [
  {
    id: "a",
    what: "result batcher acks (or terms) tasks before their results are stored",
    file: "src/effects/result-batcher.ts",
    search: [
      "    const sent = this.#publishing(jobId, body, msgId).then(",
      "      () => {",
      "        clearInterval(keeper);",
      "        for (const settle of batch.settles) settle.stored();",
      "      },",
    ].join("\n"),
    replace: [
      "    for (const settle of batch.settles) settle.stored();",
      "    const sent = this.#publishing(jobId, body, msgId).then(",
      "      () => {",
      "        clearInterval(keeper);",
      "      },",
    ].join("\n"),
    tests: [faults],
  },
  {
    id: "b",
    // Was "a finalize that failed no longer settles": the finalize now never rejects (a failure
    // is tried again, or left to a takeover with its reason), so that change changed nothing.
    what: "a job's end whose write failed transiently is not tried again (the actor ends as if it were written)",
    file: "src/api/job-effects.ts",
    search: "    await plainThenUntilDone(write, endRetry, aborted, isTransient, failed);",
    replace: "    await write().catch(() => undefined);",
    tests: [faults],
  },
  {
    id: "c",
    what: "the submitter's commit-deadline check removed",
    file: "src/effects/submit-job.ts",
    search: "  if (now() > record.commitDeadline)",
    replace: "  if (false)",
    tests: [faults],
  },
  {
    id: "d",
    what: "holds() ignores the lease's expiry and its heartbeat (both brokers share it)",
    file: "src/adapters/held-leases.ts",
    search: "    return held !== undefined && (held.until > now || this.#covers(held, now));",
    replace: "    return held !== undefined;",
    tests: [faults],
  },
  {
    id: "d-streak",
    what: "a heartbeat after a gap covers every lease again, even one taken over in the gap",
    file: "src/adapters/held-leases.ts",
    search: "      if (held.streak !== this.#streak && held.until > answeredAt) held.streak = this.#streak;",
    replace: "      held.streak = this.#streak;",
    tests: ["test/integration/jobs-multiprocess.both.test.ts", "test/unit/held-leases.test.ts"],
  },
  {
    id: "e",
    what: "stalledTimeoutMs > 0 → >= 0 in the job machine (0 no longer means never)",
    file: "src/machines/job.machine.ts",
    search: "context.settings.stalledTimeoutMs > 0 &&",
    replace: "context.settings.stalledTimeoutMs >= 0 &&",
    tests: [guards],
  },
  {
    id: "f",
    what: "madeProgress >= → > (an answer in the stall's millisecond is not progress)",
    file: "src/machines/job.machine.ts",
    search: "context.lastProgressAt >= (context.stalledSince",
    replace: "context.lastProgressAt > (context.stalledSince",
    tests: [guards],
  },
  {
    id: "g",
    what: "failure tolerance Math.floor → Math.round (withinTolerance)",
    file: "src/kernel/job-record.ts",
    search: "Math.floor(maxFailures * total + 1e-9)",
    replace: "Math.round(maxFailures * total + 1e-9)",
    tests: [guards],
  },
  {
    id: "h",
    what: "job.cancel ignored while queuing",
    file: "src/machines/job.machine.ts",
    search: '      on: { "job.cancel": { target: "failed", actions: "rememberCancel" } },\n',
    replace: "",
    tests: [guards],
  },
  {
    id: "i",
    what: "a result index ≥ total is accepted",
    file: "src/kernel/job-progress.ts",
    search: "if (!Number.isInteger(i) || i < 0 || i >= progress.total) continue;",
    replace: "if (!Number.isInteger(i) || i < 0) continue;",
    tests: [guards],
  },
  {
    id: "j",
    what: "the agent lock's default 2 h skip window changed (to 3 h)",
    file: "src/api/agents.ts",
    search: "export const DEFAULT_SKIP_FOR_MS = 2 * 60 * 60 * 1000;",
    replace: "export const DEFAULT_SKIP_FOR_MS = 3 * 60 * 60 * 1000;",
    tests: [guards],
  },
  {
    id: "k",
    what: "finalize no longer purges the tasks left (a job that ends by itself keeps them on the server)",
    file: "src/effects/finalize-job.ts",
    search:
      "  await cleanUpEnd(port, stored ?? { queue: input.queue, id: input.jobId }, below);\n  return stored;\n};",
    replace: "  return stored;\n};",
    tests: [faults],
  },
  {
    id: "k2",
    what: "a cancel no longer purges the tasks left (they stay on the server)",
    file: "src/effects/finalize-job.ts",
    search: "      yield* fromPort(() => port.removeTasks(stored, below)).pipe(",
    replace: "      yield* Effect.void.pipe(",
    tests: [faults],
  },
];
