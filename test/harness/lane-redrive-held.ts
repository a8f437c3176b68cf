import type { FaultBenchUse } from "./fault-runtimes.ts";
import { type LateDeath, type LateDeathOptions, lateDeathRolledBack } from "./lane-late-death.ts";
import { gate } from "./wait.ts";

/** How a held redrive ended: `"redriven"`, or what its refusal said. */
export type RedriveOutcome = "redriven" | { _tag?: string; field?: string; message?: string };

/** What `redriveHeld` leaves: `lateDeathRolledBack`'s job, and the redrive held across its rollback. */
export interface HeldRedrive extends LateDeath {
  /**
   * Lets the redrive go on and resolves with how it ended; `publishFails`: its task copy's
   * publish fails once (the server not answering).
   */
  release(options?: { publishFails?: boolean }): Promise<RedriveOutcome>;
}

/**
 * The late death of `lateDeathRolledBack`, with a redrive from a runtime of its own started
 * once the task died, before the rollback's mark, and held until `release` before its first
 * results publish (`publishResults`, its markers: after its reads, before its record write)
 * or before its task's publish (`publishTasks`: after its record write). Returned once the
 * record is rolled back, the redrive still held.
 */
export const redriveHeld = async (
  use: FaultBenchUse,
  queue: string,
  at: "publishResults" | "publishTasks",
  options?: LateDeathOptions,
): Promise<HeldRedrive> => {
  const redriver = await use.runtime();
  const reached = gate();
  const held = gate();
  let redrive: Promise<RedriveOutcome> | undefined;
  const death = await lateDeathRolledBack(
    use,
    queue,
    async (jobId) => {
      let holding = true;
      redriver.faults.before(at, async (of) => {
        if (of !== jobId || !holding) return;
        holding = false;
        reached.open();
        await held.opened;
      });
      redrive = redriver.rt.jobs.redrive(jobId).then(
        () => "redriven" as const,
        (error: { _tag?: string; field?: string; message?: string }) => ({
          _tag: error._tag,
          field: error.field,
          message: error.message,
        }),
      );
      await reached.opened;
    },
    options,
  );
  use.after(async () => {
    held.open();
    await redrive;
  });
  return {
    ...death,
    release: ({ publishFails = false } = {}) => {
      if (publishFails) redriver.faults.fail("publishTasks", 1, death.jobId);
      held.open();
      return redrive!;
    },
  };
};
