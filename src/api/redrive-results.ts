import type { Broker } from "../adapters/broker.ts";
import { OperationTimeout, RuntimeStopped, workOver } from "../kernel/errors.ts";
import {
  type CountedAnswers,
  countAnswers,
  FirstAnswers,
  letterOf,
  noDeadBits,
  othersAhead,
  type ResultEntry,
  takenAhead,
  takesBack,
} from "../kernel/job-progress.ts";
import { commitsOnPublish, type JobRecord } from "../kernel/job-record.ts";
import {
  answersOfSubmit,
  batchesUnder,
  decodeResults,
  encodeBatch,
  withAnswerSubmit,
} from "../kernel/result-wire.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/**
 * A redrive's reads of its job's results stream: which dead letters are
 * stale (`firstAnswers`), which tasks its own marker took back
 * (`takenBack`), and which tasks a job over never had answered
 * (`unansweredTasks`). Only on an operator's call. And its writes there, in
 * messages under the server's max payload (`publishInBatches`).
 */

/**
 * Hands each results message's entries to `add` (a message not written by jetstate skipped, as
 * the job's counts skip it) until the reader is caught up or `add` says it has read enough.
 * Bounded by the operation deadline, and a millisecond more for every 20 tasks of the job.
 */
const readResultsOf = async (
  core: RuntimeCore,
  broker: Broker,
  record: JobRecord,
  operation: "job.results.first" | "job.results.taken" | "job.results.unanswered",
  add: (entries: readonly ResultEntry[]) => boolean,
): Promise<void> => {
  const timeoutMs = core.options.connection.operationTimeoutMs + Math.ceil(record.total / 20);
  // Aborted once caught up, at the deadline, or as the runtime stops.
  const reading = core.stopLinks.link();
  const deadline = setTimeout(() => reading.abort(workOver), timeoutMs);
  let caughtUp = false;
  const over = () => {
    caughtUp = true;
    reading.abort(workOver);
  };
  try {
    await broker.readResults(
      record.queue,
      record.id,
      (body, pending) => {
        let enough = false;
        try {
          enough = add(answersOfSubmit(decodeResults(body), record.submitId));
        } catch {
          // Not written by jetstate: the job's counts skip it too.
        }
        if (pending === 0 || enough) over();
      },
      reading.signal,
      over,
    );
  } finally {
    clearTimeout(deadline);
    reading.abort(workOver);
    core.stopLinks.unlink(reading);
  }
  if (caughtUp) return;
  if (core.stopping.aborted) throw new RuntimeStopped({ message: `${operation}: the runtime stopped` });
  throw new OperationTimeout({
    message: `${operation}: the results of job ${record.id} not read within ${timeoutMs} ms`,
    operation,
    timeoutMs,
  });
};

/** The first answers of the job's tasks named (`lettered`), read until each has one or the stream ends. */
export const firstAnswers = async (
  core: RuntimeCore,
  broker: Broker,
  record: JobRecord,
  lettered: ReadonlySet<number>,
): Promise<FirstAnswers> => {
  const answers = new FirstAnswers(record.total);
  await readResultsOf(core, broker, record, "job.results.first", (entries) => {
    answers.add(entries);
    return answers.seenAll(lettered);
  });
  return answers;
};

/**
 * Which of these tasks (`indexes`) the marker of redrive `redrive` took back, as the job
 * counts them: a marker takes back a dead answer whose letter it names (`takesBack`), and only
 * the first after it does (a second redrive's, of a task already taken back, counts as nothing).
 * A death a marker took back before it landed (`takenAhead`) was never counted: no one's.
 */
export const takenBack = async (
  core: RuntimeCore,
  broker: Broker,
  record: JobRecord,
  redrive: string,
  indexes: readonly number[],
): Promise<number[]> => {
  const wanted = new Set(indexes);
  const answered = new Set<number>();
  /** Each dead task's counted answer: the letter it names. */
  const dead = new Map<number, number | undefined>();
  const takenBy = new Map<number, string>();
  /** The letters markers sent back while their task had no answer counted. */
  const ahead = new Map<number, number[]>();
  await readResultsOf(core, broker, record, "job.results.taken", (entries) => {
    for (const entry of entries) {
      const { i, ok, dead: died, redrive: marker, id, l } = entry;
      if (!wanted.has(i)) continue;
      if (marker) {
        if (!dead.has(i)) {
          if (Array.isArray(l) && !answered.has(i)) ahead.set(i, [...(ahead.get(i) ?? []), ...l]);
          continue;
        }
        const letter = dead.get(i);
        if (!takesBack(entry, letter)) continue;
        const others = othersAhead(entry, letter);
        if (others.length > 0) ahead.set(i, [...(ahead.get(i) ?? []), ...others]);
        dead.delete(i);
        answered.delete(i);
        takenBy.set(i, id ?? "");
      } else if (!answered.has(i) && !takenAhead(ahead.get(i), entry)) {
        answered.add(i);
        if (!ok && died) dead.set(i, letterOf(entry));
      }
    }
    return false;
  });
  return indexes.filter((i) => takenBy.get(i) === redrive);
};

/**
 * The tasks of the job with no answer counted, as the job counts its results (`countAnswers`,
 * every message in order): of a job over with tasks never answered, those a redrive must send.
 */
export const unansweredTasks = async (
  core: RuntimeCore,
  broker: Broker,
  record: JobRecord,
): Promise<number[]> => {
  let counted: Pick<CountedAnswers, "answered" | "deadBits" | "deadLetters" | "lettersAhead"> = {
    answered: new Uint8Array(Math.ceil(record.total / 8)),
    deadBits: noDeadBits,
    deadLetters: undefined,
    lettersAhead: undefined,
  };
  await readResultsOf(core, broker, record, "job.results.unanswered", (entries) => {
    counted = countAnswers({ total: record.total, ...counted }, entries);
    return false;
  });
  const unanswered: number[] = [];
  for (let i = 0; i < record.total; i++)
    if (((counted.answered[i >> 3] ?? 0) & (1 << (i & 7))) === 0) unanswered.push(i);
  return unanswered;
};

/** Room left in a results message of markers for its headers (its message id). */
const markerHeadroom = 256;

/**
 * `entries` (a redrive's markers, or the deaths it stores again) in results messages under the
 * server's max payload, the first named `msgId`, the next `msgId.<k>`. On a 1-task lane job each
 * names the submit of `record`, the one the redrive read (`withAnswerSubmit`): another submit of
 * the key reads none of them (`answersOfSubmit`). Naming none, a marker of a redrive refused for
 * its submit took back the next submit's death naming no letter, and a death stored again by one
 * not sent counted as the next submit's task's (lane-redrive-stray-marker.both.test.ts).
 */
export const publishInBatches = async (
  broker: Broker,
  record: JobRecord,
  entries: string[],
  msgId: string,
) => {
  const named = commitsOnPublish(record) ? entries.map((e) => withAnswerSubmit(e, record.submitId)) : entries;
  const batches = batchesUnder(named, (await broker.maxPayload()) - markerHeadroom);
  for (const [k, batch] of batches.entries())
    await broker.publishResults(
      record.queue,
      record.id,
      encodeBatch(batch),
      k === 0 ? msgId : `${msgId}.${k}`,
    );
};
