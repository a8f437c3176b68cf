import { createHash } from "node:crypto";
import { Cause, Effect, Exit } from "effect";
import type { Broker } from "../adapters/broker.ts";
import { type DeadLetter, firstLetters, lettersOfSubmit } from "../adapters/dead-letters.ts";
import { updateRecordWith } from "../effects/record-updates.ts";
import { retryWith } from "../effects/retry.ts";
import { boundError } from "../kernel/dead-letter.ts";
import { InvalidArgument, TransientBrokerError } from "../kernel/errors.ts";
import {
  commitsOnPublish,
  holdsSubmit,
  isCancelled,
  isFinal,
  type JobRecord,
  neverAnswered,
  SubmitPhase,
} from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import { encodeDeathAgain, encodeRedrive, namingRedriveId } from "../kernel/result-wire.ts";
import { taskIndexes } from "../kernel/validation.ts";
import { encodeTask, withSubmit } from "../kernel/wire.ts";
import { redriveNotSent } from "./redrive-not-sent.ts";
import { firstAnswers, publishInBatches, takenBack, unansweredTasks } from "./redrive-results.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/**
 * The job's record and dead letters, stored under its queue, one per task
 * (`letters`), and every one stored (`all`: a task may have two); an
 * unknown job has none. A letter of a task first answered by a success or a
 * failure (`stale`: its ack was lost on its last delivery; `FirstAnswers`)
 * is in neither: run again, that task would run twice. Never in `all`, they
 * do not change what names a redrive.
 */
export const deadLettersOf = async (
  core: RuntimeCore,
  broker: Broker,
  id: string,
): Promise<{ record?: JobRecord; letters: DeadLetter[]; all: DeadLetter[]; stale: DeadLetter[] }> => {
  const found = await broker.getRecord(id);
  if (!found) return { letters: [], all: [], stale: [] };
  const { record } = found;
  const stored = lettersOfSubmit(await broker.listDeadLetters(record.queue, id), record.submitId);
  if (stored.length === 0) return { record, letters: [], all: [], stale: [] };
  const answers = await firstAnswers(core, broker, record, new Set(stored.map((l) => l.index)));
  const all = stored.filter((l) => !answers.alive(l.index));
  const stale = stored.filter((l) => answers.alive(l.index));
  return { record, letters: firstLetters(all), all, stale };
};

/**
 * Sends the job's dead tasks (all, or those named) back to the workers and
 * reopens the job (`rt.jobs.redrive()`); `InvalidArgument` naming `id` when
 * there is no such job, `taskIds` when none of those is dead.
 */
export const redriveDead = async (
  core: RuntimeCore,
  broker: Broker,
  log: Logger,
  id: string,
  taskIds: ReadonlyArray<string | number> | undefined,
): Promise<void> => {
  // Refused at its record write as a redrive that failed (`RedriveFailed`): another call of the
  // same letters (the same id) stored their deaths again under new letters, so it is made again,
  // reading those. Its marker was that call's (the same id), followed by those deaths: nothing
  // of it to undo.
  const exit = await Effect.runPromiseExit(
    Effect.tryPromise({
      try: () => redriveOnce(core, broker, log, id, taskIds),
      catch: (error) => error,
    }).pipe(retryWith({ attempts: 3, initialDelayMs: 5 }, (error) => error instanceof RedriveFailed)),
  );
  if (Exit.isSuccess(exit)) return exit.value;
  throw Cause.squash(exit.cause);
};

/**
 * A redrive's record write finding its id recorded as failed (`redriveFailed`): another call
 * of the same letters was not sent and stored their deaths again (`keepDead`, redrive-not-sent.ts).
 */
class RedriveFailed extends TransientBrokerError {}

const redriveOnce = async (
  core: RuntimeCore,
  broker: Broker,
  log: Logger,
  id: string,
  taskIds: ReadonlyArray<string | number> | undefined,
): Promise<void> => {
  const wanted = taskIndexes(taskIds);
  const { record, letters, all, stale } = await deadLettersOf(core, broker, id);
  if (record) refuseRolledBack(record);
  // Stale letters go whatever this redrive does: listed, the next redrive would run their tasks.
  if (stale.length > 0) await broker.removeDeadLetters(stale.map((l) => l.seq));
  if (!record) throw new InvalidArgument({ message: `id: no job ${id}`, field: "id" });
  const chosen = letters.filter((l) => !wanted || wanted.includes(l.index));
  if (chosen.length === 0) {
    throw new InvalidArgument({
      message: `taskIds: no dead letter to redrive for job ${id}`,
      field: "taskIds",
    });
  }
  const indexes = chosen.map((l) => l.index);
  const redriven = new Set(indexes);
  // A job over with tasks never answered, each of them one this redrive sends (its letter
  // there): their deaths were taken back by a redrive whose copies were never sent (its process
  // gone between its marker and its publish; the deaths it stored again not stored), and the job
  // stalled out. Refused, no redrive could ever reopen it. Read from the results, as it counts
  // (its record's counts a preview: a death stored again after its end is not in them); read
  // only of a job over with tasks never answered: one that ended since is refused.
  const unanswered =
    neverAnswered(record) > 0 ? new Set(await unansweredTasks(core, broker, record)) : undefined;
  // At the write, of the record it writes over: the end read, not one a cancel (a user's, whose
  // tasks must not run) or an end after a reopening since (its tasks never answered may be
  // others, the letters of some removed) wrote.
  const resumable = (r: JobRecord) =>
    unanswered !== undefined &&
    !isCancelled(r) &&
    r.finishedAt === record.finishedAt &&
    [...unanswered].every((i) => redriven.has(i));
  refuseUnfinishable(record, resumable);
  // Named by every letter of the tasks it sends back: the same redrive made twice at once (two
  // operators, a call retried after a failure) publishes its marker under the same id, which
  // the server keeps once (2-minute duplicate window). Every letter, not the first of each
  // task: a letter a redrive failed to remove named the next redrive of the task, after it
  // died again, as that one.
  const sent = all.filter((l) => redriven.has(l.index));
  const nonce = namingRedriveId(hashOf(sent));
  // Each task under an id of its own letters, whichever redrive sends it: two redrives of
  // different sets made at once (`[0]` and `[0, 1]`) publish task 0 under one id, kept once.
  // Named by the redrive's whole set, each published it: task 0 ran twice.
  const lettersOf = new Map<number, DeadLetter[]>();
  for (const l of sent) {
    const of = lettersOf.get(l.index);
    if (of) of.push(l);
    else lettersOf.set(l.index, [l]);
  }
  const taskMsgIds = chosen.map((l) => `${l.index}.${hashOf(lettersOf.get(l.index) ?? [])}`);
  // Written once per redrive: the same redrive made again (its tasks and marker published once)
  // finds its id in the record and leaves the count; it lowered `dead` twice. `reopened`: this
  // call's change is the one written.
  let reopened = false;
  /** The record this call's change was made from: what a redrive not published puts back. */
  let from = record;
  /**
   * The tasks its own marker took back, read from the results once its markers are stored: of
   * two redrives of one task (`[0]` and `[0, 1]`, at once or one after the other), only the
   * first marker after the task's death takes it back. Counted by its whole set, task 0 was
   * counted off twice; counted so only by the second record writer, the first writer's marker
   * could be the second (markers stored in the other order, or a redrive started once another
   * had written the record): the record said 0 dead with a task's letter there (a review).
   */
  let taken: readonly number[] = [];
  const change = (r: JobRecord) => {
    from = r;
    // Its submit rolled back, or the key submitted again, since it was read (a 1-task lane job
    // whose late task died under a submit its submitter then rolled back): refused as at the
    // read. Written, it reopened the next submit's record and sent it the old task's copy.
    refuseOtherSubmit(record, r);
    // Another call of this id was not sent and stored the deaths again (`keepDead`), after
    // the marker the two share: reopened with this id, this call's copy's answer landed
    // after that death, a duplicate, and the job ended with the task dead though the call
    // resolved. Made again instead: it reads the new letters, another id.
    if (r.redriveFailed === nonce) {
      throw new RedriveFailed({
        message: `redrive of job ${id}: the same redrive failed, its deaths stored again: redrive again`,
        operation: "job.redrive",
      });
    }
    // Over with tasks never answered, this redrive's own included (the same redrive made
    // again): reopened all the same, or refused below.
    reopened = r.redrive !== nonce || (isFinal(r.status) && neverAnswered(r) > 0);
    if (!reopened) return undefined;
    // Ended since it was read (a cancel from another process): the same refusal.
    refuseUnfinishable(r, resumable);
    const { reason: _reason, finishedAt: _finished, redriveFailed: _failed, ...rest } = r;
    // A task never answered is not counted dead: its death taken back before, not by this write.
    const lowered = taken.filter((i) => !unanswered?.has(i)).length;
    return {
      ...rest,
      status: isFinal(r.status) ? "running" : r.status,
      counts: { ...r.counts, dead: Math.max(0, r.counts.dead - lowered) },
      redrive: nonce,
      updatedAt: core.clock.now(),
    };
  };
  const runAgain = async () => {
    taken = await takenBack(core, broker, record, nonce, indexes);
    await updateRecordWith(broker, id, change);
  };
  // Consumer and marker first, then the record, the tasks last. The consumer before the record:
  // workers follow a job once its record says running, and must then find it. The tasks after
  // the record, the point of no return: an end written before it read its tasks mark before
  // it (the clean-up that follows spares them), and one written after it meets a redrive not
  // counted and writes nothing (`uncountedRedrive`). Published before it, an end written in
  // between, its mark read after them, purged them and deleted the consumer, and the job
  // reopened with nothing to run. A lane job's task goes to whoever pulls its queue's lane,
  // who removes a task of a job that is over: its record says running before it, too.
  if (!record.lane) await broker.createConsumer(record.queue, id, record.settings);
  // The marker before the tasks: whoever counts reads "forget the dead answer" before the new one.
  // Named by the redrive: its supervisor writes no end over a record this redrive reopened until
  // it has counted the marker (finalize-job.ts, `uncountedRedrive`). In as many results messages
  // as the server's max payload asks (one message of ~22,800 markers passed 1 MB, and such a
  // redrive failed for good): all before any task, so no end is decided between two of them
  // (the tasks the first takes back are unanswered until their new answers, which come after).
  // The dead tasks' own messages go before the marker (a worker's letter names its task's): one
  // whose term was lost is stored still, and its advisory's dead answer, stored after the
  // marker, was counted as the copy's answer (the job failed, the copy's success ignored). Gone,
  // the advisory finds nothing to answer.
  const dying = sent.flatMap((l) => (l.taskSeq === undefined ? [] : [{ seq: l.taskSeq, index: l.index }]));
  if (dying.length > 0) await broker.removeTaskMessages(record, dying);
  // Each naming the letters of its task sent back: it takes back only a death of one of them. A
  // marker landing after the copy another redrive sent died again (that redrive read the letters
  // first) took that new death back too, no copy followed (its task's id was used), and the job
  // waited for the task until it stalled (redrive-late-marker-stall.both.test.ts).
  const markers = chosen.map((l) =>
    encodeRedrive(
      l.index,
      nonce,
      (lettersOf.get(l.index) ?? []).map((m) => m.seq),
    ),
  );
  await publishInBatches(broker, record, markers, `redrive.${id}.${nonce}`);
  // A 1-task lane job's copy names the submit read, as its task did: a rollback whose mark lands
  // after the record write leaves the copy on the lane, where the next submit of the key ran a
  // copy naming no submit as its own task.
  const stamp = commitsOnPublish(record) ? record.submitId : undefined;
  const bodies = chosen.map((l) => {
    const body = encodeTask(l.index, l.payload ?? null);
    return stamp === undefined ? body : withSubmit(body, l.index, stamp);
  });
  /** Its markers stored, its copies not sent (`redriveNotSent`): as this call stands when it failed. */
  const notSent = (error: unknown): Promise<never> =>
    redriveNotSent(core, broker, log, { id, record, from, sent, taken, nonce }, error);
  await runAgain().catch(async (error: unknown) => {
    if (error instanceof RedriveFailed) throw error;
    // Refused for its submit: nothing is taken back. What the redrive made is the rolled-back
    // submit's, which never runs again; its markers name it, and no other submit reads them.
    if (error instanceof InvalidArgument && !holdsSubmit(from, record)) throw error;
    // Refused in the write (the job ended meanwhile, tasks unanswered): nothing of it may stay.
    if (error instanceof InvalidArgument && isFinal(from.status)) {
      await takeBack(
        broker,
        log,
        from,
        chosen.filter((l) => taken.includes(l.index)),
        nonce,
      );
      throw error;
    }
    // Not written, or its outcome unknown: written, the job counts those deaths again and ends.
    return notSent(error);
  });
  // The same redrive reopened the job first: its publish (or its putting the record back)
  // is that one's. Publishing here too left the task on the lane of a job that one put
  // back as over, and a lane worker removed it. Not once the job has stalled since (`from`,
  // the record as read here, still naming it): that one most likely died before its publish
  // (its letters are still there). Made again, it found its id and did nothing, for good: the
  // job stayed stalled with its letters never redriven. Its marker and tasks go now, under
  // the same message ids: the server keeps one of each within its two-minute duplicate
  // window; past it, a task that one did publish (waiting for a worker) runs twice, counted
  // once.
  if (!reopened && isFinal(from.status)) {
    // Over since that one reopened it, every task answered (one over with tasks unanswered is
    // refused above): its tasks were published and answered, and its letters were left (their
    // removal failed). They go now; it did nothing, and the succeeded job listed its tasks dead
    // for good. A task that died again has a new letter, which names another redrive.
    await broker.removeDeadLetters(sent.map((l) => l.seq));
    return;
  }
  if (!reopened && from.status !== "stalled") return;
  // Not written or not published (the server not answering): put back. Left reopened with
  // nothing published, the same redrive made again found its id in the record and resolved
  // doing nothing (redrive-enrol-failed.both.test.ts, redrive-unpublished.both.test.ts).
  // Put back in the record write that decides its fate (`settleFailed`, redrive-not-sent.ts).
  const putBack = notSent;
  // A finished job's lease went with its end: a run-out one now, once the record says running
  // (a takeover pass that read it finished would remove it), so that a supervisor takes the
  // job over when this runtime does not supervise it (`takeOver: false`, e.g. the CLI). Before
  // the publish: a redrive that dies in it leaves a job a supervisor takes over and sees stall
  // (every reader is told), not one running for good with nothing to run and no one to tell.
  // A job over whose supervisor has not released its lease yet (its end's clean-up is still
  // going): the enrol finds that lease and writes nothing, and the release that follows erases
  // the key up to that supervisor's revision, leaving the reopened job with no lease: no
  // supervisor would ever find it. A run-out lease of a newer revision replaces it, which that
  // release leaves.
  // Not written (the server not answering): put back, as a publish that fails is
  // (redrive-enrol-failed.both.test.ts).
  const enrol = async () => {
    if (!(await broker.leases.enrol(id)) && isFinal(from.status)) {
      const left = await broker.leases.get(id);
      if (left) await broker.leases.remove(id, left.revision);
      // Gone already (that release landed between the enrol and the read): enrolled now all the same.
      await broker.leases.enrol(id);
    }
  };
  await enrol().catch(putBack);
  // A job reopened from an end with tasks never answered: its tasks under ids of that end too. A
  // copy the redrive that took their deaths back did publish (its outcome unknown) was purged by
  // that end: under its id, within the duplicate window, this one was not kept, and nothing ran.
  const ids =
    unanswered !== undefined && from.finishedAt !== undefined
      ? taskMsgIds.map((m) => `${m}.${from.finishedAt}`)
      : taskMsgIds;
  // Not published: the record as this write found it (an end written since the redrive read it
  // included: put back as read, the job said running with nothing to run). Left running, the
  // job had nothing to run, and the next redrive counted its dead off again. The lease written
  // above goes with the takeover pass that reads the record over.
  await broker.publishTasks({ ...record, submitId: "r" }, bodies, core.stopping, ids).catch(putBack);
  // Every letter of the tasks redriven: one left behind listed the task dead still, and the
  // next redrive ran it again.
  await broker.removeDeadLetters(sent.map((l) => l.seq));
  log.info({ jobId: id, tasks: indexes }, "dead tasks redriven");
};

/**
 * What a redrive refused in its record write made before it, taken back: the job ended meanwhile
 * with tasks unanswered (`over`), so no redrive can reopen it. The consumer it made again (the
 * end's clean-up may have deleted it first) goes, with any task of the job left; its markers
 * stay stored (a results stream keeps what was published), so the death of each task they took
 * back is stored again after them, naming the submit read as they do (`publishInBatches`; not
 * another redrive's: its copy ran, its letter is gone). Left, the consumer stayed until the
 * cleanup pass, and a reader of the job's results (`results()`) no longer saw those deaths.
 * Best effort: the refusal is what the caller gets.
 */
const takeBack = async (
  broker: Broker,
  log: Logger,
  over: JobRecord,
  letters: readonly DeadLetter[],
  nonce: string,
): Promise<void> => {
  try {
    if (!over.lane) await broker.removeTasks(over);
    // Each naming its letter, left: the redrive of it that comes sends it back. Said stored
    // again: another redrive's marker ahead of it (refused too, the job over) does not take it
    // back as it lands, which counted the task by nothing (a review, job-progress.test.ts).
    const deaths = letters.map((l) => encodeDeathAgain(l.index, boundError(l.error), l.seq));
    await publishInBatches(broker, over, deaths, `redrive.${over.id}.${nonce}.refused`);
  } catch (error) {
    log.warn(
      { err: error, jobId: over.id },
      "redrive refused; what it made before is left to the cleanup pass",
    );
  }
};

/** Eight letters and digits from the letters' sequences: what names a redrive, or one task of it. */
const hashOf = (letters: readonly DeadLetter[]): string =>
  createHash("sha256")
    .update(letters.map((l) => l.seq).join(","))
    .digest("base64url")
    .replace(/[-_]/g, "")
    .slice(0, 8);

/**
 * A job whose submit was rolled back never ran: nothing of it may run now. A 1-task lane
 * job's task published late (after its submitter found nothing stored, before its rollback's
 * mark) may have died under it and left a letter; redriven, the record said running with its
 * phase rolled back, and its task ran again. Refused before anything is removed or published.
 */
const refuseRolledBack = (record: JobRecord): void => {
  if (record.phase !== SubmitPhase.rolledBack) return;
  throw new InvalidArgument({
    message: `id: job ${record.id}'s submit was rolled back (${record.reason ?? record.status}): nothing of it can be redriven; submit it again`,
    field: "id",
  });
};

/**
 * The record a redrive writes over (`r`), against the one it read: another submit of the key
 * holds it (the read one rolled back, the key submitted again), or its submit was rolled back.
 */
const refuseOtherSubmit = (read: JobRecord, r: JobRecord): void => {
  refuseRolledBack(r);
  if (r.submitId === read.submitId) return;
  throw new InvalidArgument({
    message: `id: job ${read.id} was submitted again since its dead letters were read (submit ${r.submitId}, not ${read.submitId}): nothing of the earlier submit can be redriven`,
    field: "id",
  });
};

/**
 * A job over with tasks never answered (cancelled, stalled too long, its tasks lost) cannot be
 * reopened: its end removed those tasks, and the job would wait for them for good (it said
 * running, the cancel's reason dropped). Its dead tasks stay as they are: the caller gets a
 * typed error. Unless each of those tasks is one the redrive sends (`resumable`): nothing is
 * left to wait for. Never a cancelled job: its tasks were not to run.
 */
const refuseUnfinishable = (record: JobRecord, resumable?: (r: JobRecord) => boolean): void => {
  const unanswered = neverAnswered(record);
  if (unanswered === 0 || resumable?.(record)) return;
  throw new InvalidArgument({
    message: `id: job ${record.id} ended (${record.reason ?? record.status}) with ${unanswered} of ${record.total} tasks never answered: a redrive cannot finish it`,
    field: "id",
  });
};
