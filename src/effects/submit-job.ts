import { Effect } from "effect";
import type { JobPort } from "../adapters/job-port.ts";
import type { RecordFound } from "../adapters/job-records.ts";
import { RuntimeStopped, TransientBrokerError } from "../kernel/errors.ts";
import { commitDeadlineBy, commitsOnPublish, type JobRecord, SubmitPhase } from "../kernel/job-record.ts";
import type { HeldTaskBody } from "../kernel/wire.ts";
import { committedRecord } from "./finalize-job.ts";
import { assertSameRequest } from "./plan-submit.ts";
import { fromPort, fromThrowing, isConflict, type PortFailure, pauseUnlessAborted } from "./port-call.ts";
import { type RecordSeen, wrote } from "./record-updates.ts";
import {
  isSameSubmit,
  rollBackEffect,
  rollBackLaneEffect,
  rollForward,
  rollLaneForwardEffect,
} from "./submit-undo.ts";

/** The steps of a submit, in order; tests inject a crash after each one (a lane job has no consumer or commit step). */
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
  | { readonly kind: "existing"; readonly found: RecordFound };

export interface SubmitInput {
  readonly record: JobRecord;
  readonly bodies: readonly string[];
  /** Tasks not due yet: stored on the delayed stream before the commit (adapters/delayed-tasks.ts). */
  readonly held?: readonly HeldTaskBody[];
  readonly now: () => number;
  /**
   * How far `now` is ahead of the server's clock (`aheadOfServer`; 0 when
   * absent): another submit of the key is judged stuck by the server's stamp
   * of its record (`commitDeadlineBy`), not by its submitter's clock.
   */
  readonly aheadMs?: () => number | undefined;
  /**
   * Reads the server's clock when `aheadMs` has no reading (a runtime that
   * never listed the leases): called before another submit's deadline is
   * judged, so it is judged by the server's stamps, not as written.
   */
  readonly readClock?: () => Promise<unknown>;
  readonly signal: AbortSignal;
  /**
   * The runtime is stopping. Its registry waits for the submits in flight
   * before it stops their actors (whose stop aborts `signal`), so a submit
   * waiting on another submit of its key, nothing of its own written, gives
   * up by this, within a pause: it waited on a dead one until that one was
   * stuck (its deadline and a minute), and `rt.stop()` with it.
   */
  readonly stopping?: () => boolean;
  readonly hooks?: SubmitHooks;
  /** Gets the committed record and its revision: the job's next write starts from it. */
  readonly seen?: RecordSeen;
  /**
   * The job's supervision lease, asked for beside the record's create (one
   * round trip less per submit): awaited before the tasks are published, so a
   * committed job always has its supervisor. Its failure rolls the submit back.
   */
  readonly leased?: Promise<unknown>;
}

/**
 * Atomic submit. Record first (CAS create: the idempotency key is the key),
 * then the tasks (message id `<jobId>.<submitId>.<n>`, so a retry cannot duplicate),
 * then the job's consumer: that is the commit point. Before it no worker can
 * see a task. A lane job of more tasks has no consumer of its own: the
 * record's write is its commit point, and a worker that gets one of its
 * tasks before holds it unrun until it hears of that write
 * (`awaitsLaneCommit`). A lane job's one task is its commit point (one message is
 * stored whole or not at all), so its deadline is checked before its
 * publish, and its record keeps saying `submitting` until the job's next
 * write (`asCommittedLane` in `kernel/job-record.ts` reads it as committed
 * meanwhile). A submit that fails is rolled back here;
 * one that dies is rolled back (or, once committed, forward) by the reaper
 * once its commit deadline has passed.
 *
 * The steps every submit takes (the record created at the first try, the tasks, the commit)
 * are plain calls; the paths a few take (a key already in the store, a publish answered past
 * its deadline, a rollback) are Effect programs. One Effect program for the whole submit, a
 * fiber and its steps for each job, was ~5 % of a 1-task job's client CPU and a tenth of the
 * garbage it made.
 */
export const submitJob = async (port: JobPort, input: SubmitInput): Promise<SubmitOutcome> => {
  const first = claimedAt(input.record, input.now());
  let claim: Claim;
  try {
    claim = { revision: await port.createRecord(first), record: first };
  } catch (error) {
    if (!isConflict(error)) throw error;
    // The key is taken: read what holds it (`claimRecord`, its create already tried).
    claim = await Effect.runPromise(claimRecord(port, input, false));
  }
  if ("existing" in claim) return { kind: "existing", found: claim.existing };
  try {
    return await commit(port, input, claim);
  } catch (error) {
    // A simulated crash skips the clean-up, as a dead process would: the reaper must undo it.
    if (error instanceof SimulatedCrash) throw error;
    return Effect.runPromise(rollBack(port, input, claim.record, error as PortFailure));
  }
};

/** The steps after the claim, up to the commit (as claimed: its commit deadline counts from the claim). */
const commit = async (
  port: JobPort,
  input: SubmitInput,
  claim: { readonly revision: number; readonly record: JobRecord },
): Promise<SubmitOutcome> => {
  const { hooks } = input;
  const record = claim.record;
  await hooks?.afterStep?.(SubmitStep.recordCreated);
  if (input.leased) await input.leased;
  // A lane job's publish is its commit point: a worker may run its task at once. Its
  // deadline is checked before, never after (a rollback then would say "failed" of a task
  // that ran, or undo the reaper's roll-forward).
  const onPublish = commitsOnPublish(record);
  if (onPublish) assertBeforeDeadline(record, input.now);
  await port.publishTasks(record, input.bodies, input.signal);
  const late =
    onPublish && input.now() > record.commitDeadline
      ? await Effect.runPromise(commitLatePublish(port, record, input.now))
      : undefined;
  // Held before the commit: a rollback removes them (`removeTasks`), and a mover that finds
  // one before the commit waits for it (machines/delayed.machine.ts).
  const held = input.held;
  if (held?.length) await port.holdTasks(record, held, input.signal);
  await hooks?.afterStep?.(SubmitStep.tasksPublished);
  if (!onPublish) assertBeforeDeadline(record, input.now);
  // A lane job's tasks are the queue's lane consumer's: its record's write commits it (its
  // task's publish did, for a job of one task).
  if (!record.lane) {
    await port.createConsumer(record.queue, record.id, record.settings);
    await hooks?.afterStep?.(SubmitStep.consumerCreated);
  }
  const committed: JobRecord = {
    ...record,
    phase: SubmitPhase.committed,
    status: "running",
    updatedAt: input.now(),
  };
  // A 1-task lane job's commit is not written now: its stored task (or a result of it) says
  // it committed. Its next write (its end, most often a few milliseconds later, or the first
  // progress write a second on) writes the commit with it, from the create's revision.
  if (late) {
    if (input.seen) {
      wrote(input.seen, late.record, late.revision);
      input.seen.laneSubmit = record.submitId;
    }
    return { kind: "committed", record: late.record };
  }
  if (onPublish) {
    if (input.seen) {
      input.seen.last = { record: committed, revision: claim.revision };
      input.seen.lastUnwritten = true;
      input.seen.laneSubmit = record.submitId;
    }
    return { kind: "committed", record: committed };
  }
  if (input.seen) input.seen.writing = committed;
  const revision = await port.updateRecord(committed, claim.revision);
  if (input.seen) wrote(input.seen, committed, revision);
  await hooks?.afterStep?.(SubmitStep.recordCommitted);
  // Only now may the rest of the system hear of the job. A core NATS note, best effort: the
  // job is committed either way, and every watcher finds it in the records bucket too.
  try {
    await port.announceCreated(record.queue, record.id);
  } catch {
    // Best effort (above).
  }
  return { kind: "committed", record: committed };
};

/** A submit that failed after its claim (`record`, as claimed): rolled back, or forward when it stands committed. */
const rollBack = (
  port: JobPort,
  input: SubmitInput,
  record: JobRecord,
  error: PortFailure,
): Effect.Effect<SubmitOutcome, PortFailure> => {
  const reason = `submit failed: ${error instanceof Error ? error.message : String(error)}`;
  if (record.lane) return rollBackLane(port, input, reason, error);
  return rollBackEffect(port, record, reason, input.now).pipe(
    Effect.flatMap((found) => {
      if (found === undefined) return Effect.fail(error);
      if (input.seen) wrote(input.seen, found.record, found.revision);
      return Effect.succeed({ kind: "committed", record: found.record } as const);
    }),
  );
};

/**
 * A lane submit that failed: a 1-task job's task found stored is committed
 * (`rollPublishedForward`); otherwise its record is marked rolled back
 * first, and its tasks removed only then. Its publish may have been stored
 * though its answer never came (cut off from the server), and a takeover
 * that found the task then wrote the commit (`rollLaneForward`); or, a job of more
 * tasks, its commit's write was stored though its answer never came: the
 * submit stands committed, its tasks kept. Removing them first would leave
 * a committed job without them. A worker holding one of them until the
 * commit (`awaitsLaneCommit`) hears of the rollback and lets go of it.
 */
const rollBackLane = (port: JobPort, input: SubmitInput, reason: string, error: PortFailure) =>
  Effect.gen(function* () {
    const { record } = input;
    const found =
      (commitsOnPublish(record) ? yield* rollPublishedForward(port, record, input.now) : undefined) ??
      (yield* rollBackLaneEffect(port, record, reason, input.now));
    if (found === undefined) return yield* Effect.fail(error);
    if (input.seen) {
      wrote(input.seen, found.record, found.revision);
      input.seen.laneSubmit = record.submitId;
    }
    return { kind: "committed", record: found.record } as const;
  });

/**
 * A 1-task lane submit that failed at or after its publish: its task may be
 * stored all the same (its answer lost, the retries given up), and that is
 * the job's commit point; a worker may have run it already. Rolled forward
 * then, as the reaper would (`rollLaneForward`), not back: back, the job
 * would say failed over a task that ran, and a resubmit of its key run it
 * again. The committed record, or undefined when its task is not stored or
 * the record is no longer this submit's, or changed since it was read.
 */
const rollPublishedForward = (port: JobPort, record: JobRecord, now: () => number) =>
  Effect.gen(function* () {
    const found = yield* fromPort(() => port.getRecord(record.id));
    return isSameSubmit(found, record) ? yield* rollLaneForwardEffect(port, found, now) : undefined;
  });

/**
 * A 1-task lane job's publish answered past its commit deadline (it waited
 * for a connection, its retries ran long): the reaper, past the deadline
 * and its grace, may be rolling the submit back, having found no task before
 * it landed. Its commit is written now, not with its next write: the
 * reaper's mark is a compare-and-set on the same revision, so one of the
 * two wins. Rolled back first (or the record another submit's since), the
 * submit fails, and its rollback removes the late task (a worker that meets
 * it first reads the record and removes it too), instead of answering with
 * a job whose record says failed. Called only past the deadline: before it,
 * the commit rides on the job's next write, as usual.
 */
const commitLatePublish = (
  port: JobPort,
  record: JobRecord,
  now: () => number,
): Effect.Effect<RecordFound | undefined, PortFailure | TransientBrokerError> =>
  Effect.gen(function* () {
    for (let tries = 0; tries < 3; tries++) {
      const found = yield* fromPort(() => port.getRecord(record.id));
      const ours = found?.record.submitId === record.submitId;
      // Committed by a takeover that found the task meanwhile.
      if (ours && found?.record.phase === SubmitPhase.committed) return found;
      if (!isSameSubmit(found, record)) break;
      const written = yield* rollForward(port, found.record, found.revision, now);
      if (written) return written;
    }
    return yield* Effect.fail(
      new TransientBrokerError({
        message: "submit of 1 task rolled back by the reaper while its publish was answered late",
        operation: "job.submit",
      }),
    );
  });

/**
 * Throws once the submit's commit deadline has passed: the reaper may roll it
 * back from then on. Transient: the same submit again (a flow's next step, a
 * schedule's owed tick, a caller's retry) may commit; wrapped as a permanent
 * refusal (an untagged error), it failed flow nodes for good.
 */
const assertBeforeDeadline = (record: JobRecord, now: () => number): void => {
  if (now() > record.commitDeadline)
    throw new TransientBrokerError({
      message: `submit of ${record.total} tasks passed its commit deadline; rolled back`,
      operation: "job.submit",
    });
};

/**
 * The planned record as claimed at `now`: with as long a commit window from the claim as the
 * plan gave it (`claimRecord`).
 */
const claimedAt = (planned: JobRecord, now: number): JobRecord => ({
  ...planned,
  updatedAt: now,
  commitDeadline: Math.max(planned.commitDeadline, now + (planned.commitDeadline - planned.createdAt)),
});

type Claim = { readonly revision: number; readonly record: JobRecord } | { readonly existing: RecordFound };

/**
 * Creates the record, or finds the job the idempotency key already names
 * (`IdempotencyConflict` if that job was submitted with other tasks or settings).
 * A record left by a rolled-back submit is taken over, so resubmitting with
 * the same key works; one still being submitted elsewhere is waited for. The
 * record claimed has as long a commit window from the claim as the plan gave
 * it: a submit that waited out a dead one until the reaper rolled it back
 * passed its planned deadline meanwhile, and failed ("passed its commit
 * deadline") though nothing of it had been written. Its `updatedAt` is the
 * claim's time: other runtimes count the window (`commitDeadline` less
 * `updatedAt`) from the server's stamp of the claim (`commitDeadlineBy`),
 * and from the plan's time it held the wait too.
 */
const claimRecord = (
  port: JobPort,
  input: SubmitInput,
  /** False: the first create was tried (`submitJob`) and met a record; the loop starts with its read. */
  createFirst = true,
): Effect.Effect<Claim, PortFailure> =>
  Effect.gen(function* () {
    /** The record as claimed now. */
    const claimed = (): JobRecord => claimedAt(input.record, input.now());
    for (let create = createFirst; ; create = true) {
      const record = claimed();
      const created = create
        ? yield* fromPort(() => port.createRecord(record)).pipe(
            Effect.map((revision): Claim | undefined => ({ revision, record })),
            Effect.catchTag("RevisionConflict", () => Effect.succeed(undefined)),
          )
        : undefined;
      if (created) return created;
      const found = yield* fromPort(() => port.getRecord(record.id));
      if (!found) continue; // deleted meanwhile: try to create again
      const { record: other, revision } = found;
      // The key names this job only if it was asked for the same tasks and settings.
      yield* fromThrowing(() => assertSameRequest(other, record));
      if (other.phase === SubmitPhase.committed) return { existing: found };
      // A lane job whose commit is not written yet: committed once its task is stored. The commit
      // is written before this submit answers with the job: its own submitter, whose publish was
      // stored though its answer was lost, would otherwise roll back the job handed out here
      // (and a later submit of the key run its task again). It finds the commit and stands.
      const view = yield* fromPort(() => committedRecord(port, found));
      if (view?.record.phase === SubmitPhase.committed) {
        const committed = yield* rollForward(port, other, revision, input.now);
        if (committed) return { existing: committed };
        continue; // changed since read (its end, or its commit, written): read again
      }
      if (other.phase === SubmitPhase.rolledBack) {
        const taking = claimed();
        const taken = yield* fromPort(() => port.updateRecord(taking, revision)).pipe(
          Effect.map((next): Claim | undefined => ({ revision: next, record: taking })),
          Effect.catchTag("RevisionConflict", () => Effect.succeed(undefined)),
        );
        if (taken) return taken;
        continue;
      }
      // Another submit of the same key is in flight: its outcome decides. Stuck a minute past its
      // deadline by the server's stamp: by its own, a submitter ahead that died was waited for
      // as long as it was ahead.
      if (input.readClock)
        yield* Effect.promise(() => input.readClock?.().catch(() => undefined) ?? Promise.resolve());
      if (input.now() > commitDeadlineBy(found, input.aheadMs?.()) + 60_000) {
        return yield* Effect.fail(
          new TransientBrokerError({
            message: `job ${record.id} is stuck in submit; the reaper will roll it back`,
            operation: "job.submit",
          }),
        );
      }
      yield* pauseUnlessAborted(200, input.signal);
      if (input.stopping?.()) return yield* Effect.fail(new RuntimeStopped({ message: "runtime stopped" }));
    }
  });
