import type { JobPort } from "../adapters/job-port.ts";
import { RevisionConflict } from "../kernel/errors.ts";
import { type JobRecord, SubmitPhase } from "../kernel/job-record.ts";
import { assertSameRequest } from "./plan-submit.ts";
import { sleep } from "./supervise-loop.ts";

/** The steps of a submit, in order; tests inject a crash after each one. */
export const SubmitStep = {
  recordCreated: "recordCreated",
  tasksPublished: "tasksPublished",
  consumerCreated: "consumerCreated",
  recordCommitted: "recordCommitted",
} as const;
export type SubmitStep = (typeof SubmitStep)[keyof typeof SubmitStep];

export interface SubmitHooks {
  /** Called after each step; throwing here simulates the process dying at that point. */
  readonly afterStep?: (step: SubmitStep) => void | Promise<void>;
}

/** Thrown by a test hook to simulate a crash: no clean-up runs, the reaper must undo it. */
export class SimulatedCrash extends Error {
  override readonly name = "SimulatedCrash";
}

export type SubmitOutcome =
  | { readonly kind: "committed"; readonly record: JobRecord }
  /** The idempotency key named a job that already exists: nothing was written. */
  | { readonly kind: "existing"; readonly record: JobRecord };

export interface SubmitInput {
  readonly record: JobRecord;
  readonly bodies: readonly string[];
  readonly now: () => number;
  readonly signal: AbortSignal;
  readonly hooks?: SubmitHooks;
}

/**
 * Atomic submit. Record first (CAS create: the idempotency key is the key),
 * then the tasks (message id `<jobId>.<submitId>.<n>`, so a retry cannot duplicate),
 * then the job's consumer: that is the commit point. Before it no worker can
 * see a task. A submit that fails is rolled back here; one that dies is
 * rolled back by the reaper once its commit deadline has passed.
 */
export const submitJob = async (port: JobPort, input: SubmitInput): Promise<SubmitOutcome> => {
  const { record, hooks } = input;
  const claim = await claimRecord(port, input);
  if ("existing" in claim) return { kind: "existing", record: claim.existing };
  let revision = claim.revision;
  try {
    await hooks?.afterStep?.(SubmitStep.recordCreated);
    await port.publishTasks(record, input.bodies, input.signal);
    await hooks?.afterStep?.(SubmitStep.tasksPublished);
    if (input.now() > record.commitDeadline) {
      throw new Error(`submit of ${record.total} tasks passed its commit deadline; rolled back`);
    }
    await port.createConsumer(record.queue, record.id, record.settings);
    await hooks?.afterStep?.(SubmitStep.consumerCreated);
    const committed: JobRecord = {
      ...record,
      phase: SubmitPhase.committed,
      status: "running",
      updatedAt: input.now(),
    };
    revision = await port.updateRecord(committed, revision);
    await hooks?.afterStep?.(SubmitStep.recordCommitted);
    // Only now may the rest of the system hear of the job. A core NATS note, best effort: the
    // job is committed either way, and every watcher finds it in the records bucket too.
    await port.announceCreated(record.queue, record.id).catch(() => undefined);
    return { kind: "committed", record: committed };
  } catch (error) {
    if (error instanceof SimulatedCrash) throw error;
    await rollBack(
      port,
      record,
      `submit failed: ${error instanceof Error ? error.message : String(error)}`,
      input.now,
    );
    throw error;
  }
};

/**
 * Creates the record, or finds the job the idempotency key already names
 * (`IdempotencyConflict` if that job was submitted with other tasks or settings).
 * A record left by a rolled-back submit is taken over, so resubmitting with
 * the same key works; one still being submitted elsewhere is waited for.
 */
const claimRecord = async (
  port: JobPort,
  input: SubmitInput,
): Promise<{ readonly revision: number } | { readonly existing: JobRecord }> => {
  const { record } = input;
  for (;;) {
    try {
      return { revision: await port.createRecord(record) };
    } catch (error) {
      if (!(error instanceof RevisionConflict)) throw error;
    }
    const found = await port.getRecord(record.id);
    if (!found) continue; // deleted meanwhile: try to create again
    const { record: other, revision } = found;
    // The key names this job only if it was asked for the same tasks and settings.
    assertSameRequest(other, record);
    if (other.phase === SubmitPhase.committed) return { existing: other };
    if (other.phase === SubmitPhase.rolledBack) {
      try {
        return { revision: await port.updateRecord(record, revision) };
      } catch (error) {
        if (error instanceof RevisionConflict) continue;
        throw error;
      }
    }
    // Another submit of the same key is in flight: its outcome decides.
    if (input.now() > other.commitDeadline + 60_000) {
      throw new Error(`job ${record.id} is stuck in submit; the reaper will roll it back`);
    }
    await sleep(200, input.signal);
    if (input.signal.aborted) throw input.signal.reason;
  }
};

/** Undoes a submit: no task stays visible, the record says why it failed. */
export const rollBack = async (port: JobPort, record: JobRecord, reason: string, now: () => number) => {
  await port.removeTasks(record.queue, record.id);
  for (let tries = 0; tries < 5; tries++) {
    const found = await port.getRecord(record.id);
    // Only a submit that never committed is undone; a committed job is supervised instead.
    if (!found || found.record.phase !== SubmitPhase.submitting) return;
    try {
      await port.updateRecord(
        {
          ...found.record,
          phase: SubmitPhase.rolledBack,
          status: "failed",
          reason,
          updatedAt: now(),
          finishedAt: now(),
        },
        found.revision,
      );
      return;
    } catch (error) {
      if (!(error instanceof RevisionConflict)) throw error;
    }
  }
};
