import { Effect } from "effect";
import type { JobPort } from "../adapters/job-port.ts";
import type { JobRecords } from "../adapters/job-records.ts";
import type { ConsumerRestore } from "../adapters/task-queue.ts";
import {
  isFinal,
  isRunning,
  type JobCounts,
  type JobRecord,
  type JobTasksRef,
  madeAgain,
  madeAgainReason,
  maxCounts,
  SubmitPhase,
} from "../kernel/job-record.ts";
import { fromPort, type PortFailure } from "./port-call.ts";
import { type RecordSeen, updateRecordWithEffect } from "./record-updates.ts";

/**
 * Makes a running job's consumer again if it is gone (`restoreConsumer`),
 * and once made again, writes its record (`updatedAt` only): workers find
 * the jobs running when they start or reconnect by their consumers, so one
 * that looked while this consumer was gone hears of the job only through
 * its record watch. Best effort: a failed write leaves such a worker to its
 * next reconnect (the job stalls meanwhile, if no other worker pulls it).
 */
const restoreConsumerEffect = (
  broker: JobPort,
  record: JobRecord,
  now: number,
): Effect.Effect<ConsumerRestore, PortFailure> =>
  fromPort(() => broker.restoreConsumer(record, record.settings)).pipe(
    Effect.tap((restored) =>
      restored === "restored"
        ? updateRecordWithEffect(
            broker,
            record.id,
            (r) => (isRunning(r) ? { ...r, updatedAt: Math.max(now, r.updatedAt + 1) } : undefined),
            3,
          ).pipe(Effect.ignore)
        : Effect.void,
    ),
  );

export const restoreConsumer = (broker: JobPort, record: JobRecord, now: number): Promise<ConsumerRestore> =>
  Effect.runPromise(restoreConsumerEffect(broker, record, now));

/**
 * Why the job's tasks can never be answered, if they cannot: its consumer is
 * gone, and its record is gone too (the server came back with an empty
 * store), made again by another submit of its key (`madeAgain`), or still
 * says it runs with none of its tasks stored (every end and
 * cancel is written to the record before the consumer is deleted, so a
 * running job has a consumer). A running job's consumer gone over tasks
 * still stored or held (a server restarted with its store, and the consumer
 * lived in its memory: `jobs.memoryConsumers`) is made again: the job is
 * not lost. Undefined while the consumer exists, or when the record says it
 * ended.
 */
const lostReasonEffect = (
  broker: JobPort,
  job: JobTasksRef & Pick<JobRecord, "submitId">,
  now: number,
): Effect.Effect<string | undefined, PortFailure> =>
  Effect.gen(function* () {
    if (yield* fromPort(() => broker.tasksCommitted(job))) return undefined;
    const found = yield* fromPort(() => broker.getRecord(job.id));
    if (found === undefined)
      return "tasks lost: the server's store was reset (the job's record and consumer are gone)";
    // Another submit of the key made it again (the store was reset): not this job's to restore.
    if (madeAgain(found.record, job.submitId)) return madeAgainReason(found.record);
    if (found.record.status === "running" || found.record.status === "stalled") {
      // Its consumer made again over tasks still stored or held (`restoreConsumer` says when).
      const { record } = found;
      if (!job.lane && (yield* restoreConsumerEffect(broker, record, now)) !== "empty") return undefined;
      return "tasks lost: the job's consumer is gone (deleted, or the server's store was reset)";
    }
    return undefined;
  });

export const lostReason = (
  broker: JobPort,
  job: JobTasksRef & Pick<JobRecord, "submitId">,
  now: number,
): Promise<string | undefined> => Effect.runPromise(lostReasonEffect(broker, job, now));

/**
 * Writes the lost job's end: onto its record, or, when the record went with
 * the store, as a new record (what the job was, failed, with the reason), so
 * that `get()` anywhere says how it ended. Resolves with the record as stored:
 * another end, written first, stands, and another submit's record (`madeAgain`)
 * is left as read, for the caller to end the lost job without a write.
 */
const recordLostEffect = (
  broker: JobRecords,
  record: JobRecord,
  counts: JobCounts,
  reason: string,
  now: number,
  fence: Pick<RecordSeen, "holder"> | undefined,
): Effect.Effect<JobRecord, PortFailure> =>
  Effect.gen(function* () {
    const ended = (r: JobRecord): JobRecord => ({
      ...r,
      status: "failed",
      phase: SubmitPhase.committed,
      counts: maxCounts(r.counts, counts),
      reason,
      updatedAt: now,
      finishedAt: now,
    });
    // A supervisor's write: refused once another runtime took the job over (`fenceOf`).
    const updated = yield* updateRecordWithEffect(
      broker,
      record.id,
      (r) => (isFinal(r.status) || madeAgain(r, record.submitId) ? undefined : ended(r)),
      10,
      fence && { ...fence },
    );
    if (updated) return updated;
    const remade = ended({ ...record, counts: { done: 0, failed: 0, dead: 0 } });
    return yield* fromPort(() => broker.createRecord(remade)).pipe(
      Effect.as(remade),
      // Made again meanwhile (another runtime recorded the loss): its end stands.
      Effect.catchTag("RevisionConflict", (conflict) =>
        fromPort(() => broker.getRecord(record.id)).pipe(
          Effect.flatMap((found) => (found ? Effect.succeed(found.record) : Effect.fail(conflict))),
        ),
      ),
    );
  });

export const recordLost = (
  broker: JobRecords,
  record: JobRecord,
  counts: JobCounts,
  reason: string,
  now: number,
  /** The supervisor's name (`RecordSeen`): its write is fenced. */
  fence?: Pick<RecordSeen, "holder">,
): Promise<JobRecord> => Effect.runPromise(recordLostEffect(broker, record, counts, reason, now, fence));
