import type { Broker } from "../adapters/broker.ts";
import { type DeadLetter, firstLetters } from "../adapters/dead-letters.ts";
import { updateRecordWith } from "../effects/record-updates.ts";
import { boundError } from "../kernel/dead-letter.ts";
import {
  InvalidArgument,
  isTransient,
  PermanentBrokerError,
  RuntimeStopped,
  TransientBrokerError,
} from "../kernel/errors.ts";
import { holdsSubmit, isFinal, type JobRecord } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import { encodeFailed } from "../kernel/result-wire.ts";
import { publishInBatches } from "./redrive-results.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/**
 * A redrive that failed half-way: its markers stored, its copies not sent
 * (`job-redrive.ts` up to there). What it put in the record is put back, the
 * deaths its markers took back are stored again, and the caller is told.
 */

/** What a redrive not sent had made when it failed. */
export interface UnsentRedrive {
  readonly id: string;
  /** The record the redrive read. */
  readonly record: JobRecord;
  /** The record its change was made from: what a redrive not published puts back. */
  readonly from: JobRecord;
  /** The letters it read of the tasks it sends back. */
  readonly sent: readonly DeadLetter[];
  /** The tasks its own marker took back. */
  readonly taken: readonly number[];
  /** What names the redrive (its marker's message id, the record's `redrive`). */
  readonly nonce: string;
}

/**
 * Its markers stored, its copies not sent: the deaths they took back are stored again, each
 * under a letter of its own (`keepDead`), and the caller is told. Left taken back, nothing
 * answered for those tasks: the job waited for them until it stalled, then ended with them
 * never answered, and no redrive could reopen it (redrive-copy-unpublished.both.test.ts).
 * Refused (`InvalidArgument`), nothing written or stored, when the record no longer holds the
 * submit the redrive read, or that submit was rolled back (`settleFailed`).
 */
export const redriveNotSent = async (
  core: RuntimeCore,
  broker: Broker,
  log: Logger,
  redrive: UnsentRedrive,
  error: unknown,
): Promise<never> => {
  const { id, record, sent, taken, nonce } = redrive;
  let refused: InvalidArgument | undefined;
  const kept = await keepDead(broker, log, record, sent, taken, nonce, (storing) =>
    settleFailed(core, broker, log, redrive, storing).catch((undo: unknown) => {
      if (undo instanceof InvalidArgument) refused = undo;
      throw undo;
    }),
  );
  throw notPublished(id, error, kept, refused);
};

/**
 * The fate of this redrive decided in the record, before any death is stored again: the
 * record written by compare-and-set, a writer of the same id after it sees it. Still this
 * redrive's and not over (a cancel since stands), it is put back as its write found it
 * (`from`): its write not answered (its outcome unknown) may have been stored, and the job
 * said running with no lease (written after a write answered), nobody supervising it; a write
 * after its own (the supervisor's progress, counting its marker) does not keep it. Kept, the
 * same redrive made again found its id there and did nothing, for good. With deaths to store
 * (`storing`), its id recorded failed (`redriveFailed`): a call of the same id held before
 * its record write (its marker the same as this one's, dropped) reopened the job after, its
 * copy's answer landing after the death stored here (a duplicate), and the job ended with the
 * task dead though that call resolved (redrive-kept-dead-concurrent.both.test.ts). Not
 * written, nothing is stored (`keepDead`): the death stays taken back, the same redrive made
 * again sends it. Refused (`InvalidArgument`), nothing written or stored, when the record no
 * longer holds the submit read (the key submitted again) or that submit was rolled back, as
 * the redrive's record write is (`refuseOtherSubmit`, job-redrive.ts): put back, or its id
 * recorded failed, it wrote over the next submit's record, and that job ended failed, its task
 * dead though it ran once and succeeded (lane-redrive-unsent-resubmit.both.test.ts).
 */
const settleFailed = async (
  core: RuntimeCore,
  broker: Broker,
  log: Logger,
  { id, record, from, nonce }: UnsentRedrive,
  storing: boolean,
) => {
  await updateRecordWith(broker, id, (r) => {
    if (!holdsSubmit(r, record)) {
      throw new InvalidArgument({
        message: `job ${id} was submitted again or its submit rolled back since its dead letters were read (submit ${r.submitId}, read ${record.submitId}): nothing of the earlier submit can be redriven`,
        field: "id",
      });
    }
    const mine = r.redrive === nonce && !isFinal(r.status);
    const base = mine ? reclosed(r, from, core.clock.now()) : r;
    if (!storing || (!mine && r.redriveFailed === nonce)) return mine ? base : undefined;
    return { ...base, redriveFailed: nonce, updatedAt: Math.max(core.clock.now(), r.updatedAt) };
  }).catch((undo: unknown) => {
    if (undo instanceof InvalidArgument) throw undo;
    log.error({ err: undo, jobId: id }, "redrive not published, and its record not put back");
    if (storing) throw undo;
  });
};

/**
 * The deaths a redrive's markers took back (`taken`), its copies not sent (not published, or
 * their outcome unknown): each task's first letter (of `sent`, the letters read) is stored again
 * as a letter of its own, its death naming it is stored after the markers, and the task's
 * letters read go. The job counts the task dead again, and ends; the next redrive of it reads
 * another letter, so it is another redrive (its marker and copy under new ids: under the same,
 * within the server's two-minute duplicate window, neither was kept, and the death stood with
 * the letter gone, or the job waited for a copy never run), and its marker names the new letter:
 * it takes this death back. Not `again` (`encodeDeathAgain`): a redrive that read the new
 * letter before its death landed sends it, and its marker ahead of that death takes it back as
 * it lands. A copy that was stored (its outcome unknown) runs still: its answer counts when it
 * lands first (the task answered, the death a duplicate), and is a duplicate after it (the task
 * dead, its letter there). Best effort, in that order: a letter not stored leaves the death
 * taken back (the same redrive made again sends it); a death not stored, or old letters not
 * removed, leave more letters, which the next redrive sends back. The tasks whose death is
 * stored again, for the caller.
 */
const keepDead = async (
  broker: Broker,
  log: Logger,
  record: JobRecord,
  sent: readonly DeadLetter[],
  taken: readonly number[],
  nonce: string,
  settle: (storing: boolean) => Promise<void>,
): Promise<number[]> => {
  const back = new Set(taken);
  const read = sent.filter((l) => back.has(l.index));
  const lost = firstLetters(read);
  try {
    await settle(lost.length > 0);
  } catch {
    return [];
  }
  if (lost.length === 0) return [];
  try {
    const deaths: string[] = [];
    // 64 at a time: one after the other, a redrive of thousands of tasks took as many round trips.
    for (let k = 0; k < lost.length; k += 64) {
      const stored = await Promise.all(
        lost
          .slice(k, k + 64)
          .map(({ seq: _seq, taskId: _taskId, taskSeq: _taskSeq, ...letter }) =>
            broker
              .storeDeadLetter(letter, `redrive.${record.id}.${nonce}.${letter.index}.kept`)
              .then((seq) => encodeFailed(letter.index, boundError(letter.error), true, seq)),
          ),
      );
      deaths.push(...stored);
    }
    await publishInBatches(broker, record, deaths, `redrive.${record.id}.${nonce}.kept`);
    await broker.removeDeadLetters(read.map((l) => l.seq));
    return lost.map((l) => l.index);
  } catch (error) {
    log.error(
      { err: error, jobId: record.id, tasks: lost.map((l) => l.index) },
      "redrive not sent, and the deaths its marker took back not stored again",
    );
    return [];
  }
};

/**
 * What the caller of a redrive not sent is told: what happened, as transient as its cause; for
 * good when it was refused for its submit (`refused`).
 */
const notPublished = (
  id: string,
  error: unknown,
  kept: readonly number[],
  refused?: InvalidArgument,
): Error => {
  const cause = error instanceof Error ? error.message : String(error);
  if (refused) {
    return new InvalidArgument({
      message: `redrive of job ${id}: its tasks not published (${cause}); ${refused.message}`,
      field: "id",
    });
  }
  if (error instanceof RuntimeStopped) return error;
  const message = `redrive of job ${id}: its tasks not published (${cause}); ${
    kept.length > 0
      ? `the deaths of tasks ${kept.join(", ")} are stored again, each under a new letter: redrive them again`
      : "redrive again"
  }`;
  return isTransient(error)
    ? new TransientBrokerError({ message, operation: "job.redrive", cause: error })
    : new PermanentBrokerError({ message, operation: "job.redrive", cause: error });
};

/**
 * A record reopened by a redrive, put back as that write found it (`was`): its
 * status, end, dead count and last redrive (the same redrive made again
 * must reopen it).
 */
const reclosed = (r: JobRecord, was: JobRecord, now: number): JobRecord => {
  const { reason: _reason, finishedAt: _finished, redrive: _redrive, ...rest } = r;
  return {
    ...rest,
    status: was.status,
    ...(was.reason === undefined ? {} : { reason: was.reason }),
    ...(was.finishedAt === undefined ? {} : { finishedAt: was.finishedAt }),
    ...(was.redrive === undefined ? {} : { redrive: was.redrive }),
    counts: { ...r.counts, dead: was.counts.dead },
    updatedAt: Math.max(now, r.updatedAt),
  };
};
