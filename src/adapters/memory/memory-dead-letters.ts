import { jobIdOfSubject } from "../../kernel/cleanup-plan.ts";
import { decodeDeadLetter, encodeDeadLetter } from "../../kernel/dead-letter.ts";
import { answerSubmit, ofOtherSubmit } from "../../kernel/job-record.ts";
import { encodeDeadResult } from "../../kernel/result-wire.ts";
import { decodeTask } from "../../kernel/wire.ts";
import type { DeadLetter, UnhandledExhausted } from "../dead-letters.ts";
import { storedRecord } from "./memory-records.ts";
import { checkToken, type MemoryServerState } from "./memory-server.ts";

/** One results message, de-duplicated by `msgId` within the duplicate window. */
export const appendResults = (
  server: MemoryServerState,
  queue: string,
  jobId: string,
  body: string,
  msgId: string,
): void => {
  const op = "job.results.publish";
  server.assertOpen(op);
  checkToken(op, "queue", queue);
  checkToken(op, "jobId", jobId);
  server.checkPayload(op, body, msgId);
  server.results.append(server.names.resultsSubject(queue, jobId), body, msgId);
};

/** Stored as on NATS: the letter with its task id, de-duplicated by `msgId`; its sequence. */
export const storeDeadLetter = (
  server: MemoryServerState,
  letter: Omit<DeadLetter, "seq" | "taskId">,
  msgId: string,
): number => {
  const op = "dead-letters.store";
  server.assertOpen(op);
  checkToken(op, "queue", letter.queue);
  checkToken(op, "jobId", letter.jobId);
  const body = encodeDeadLetter(letter);
  server.checkPayload(op, body, msgId);
  return server.deadLetters.append(server.names.deadSubject(letter.queue, letter.jobId), body, msgId);
};

export const listDeadLetters = (server: MemoryServerState, queue: string, jobId: string): DeadLetter[] => {
  const op = "dead-letters.list";
  server.assertOpen(op);
  // No job has a queue or id that is not a subject token, so none has dead letters: NATS, asked
  // for the messages under such a subject, finds none and lists nothing. A read, not a refusal.
  try {
    checkToken(op, "queue", queue);
    checkToken(op, "jobId", jobId);
  } catch {
    return [];
  }
  return server.deadLetters
    .read(server.names.deadSubject(queue, jobId))
    .map((m) => ({ ...decodeDeadLetter(m.body), seq: m.seq }));
};

export const removeDeadLetters = (server: MemoryServerState, seqs: readonly number[]): void => {
  server.assertOpen("dead-letters.remove");
  for (const seq of seqs) server.deadLetters.delete(seq);
};

/**
 * What the NATS runtime does with each captured MAX_DELIVERIES advisory
 * (src/adapters/nats/dead-letters.ts `process`), each handled by one reader:
 * if the task is still stored nobody answered it, so it becomes a dead
 * letter with its payload and a `dead` results message, and leaves the
 * tasks stream. A task answered after its lease ran out is gone: nothing.
 * One that cannot be dead-lettered (every error here is permanent) is
 * counted dead if it can be, removed and told to `onUnhandled`, as on NATS.
 */
export const processExhausted = async (
  server: MemoryServerState,
  signal: AbortSignal,
  onUnhandled?: (failure: UnhandledExhausted) => void,
): Promise<void> => {
  server.assertOpen("dead-letters.process");
  const { tasks } = server;
  tasks.capturing = true;
  const stop = AbortSignal.any([signal, server.closed]);
  for (;;) {
    const advisory = await tasks.advisories.take(stop);
    if (!advisory) return;
    const stored = tasks.get(advisory.seq);
    if (!stored) continue;
    const queue = queueOfTask(server, stored.subject);
    // From the task's subject: the advisory names a consumer, the job's own or its queue's lane.
    const jobId = jobIdOfSubject(stored.subject);
    const error = `no answer after ${advisory.deliveries} deliveries (worker died or its lease ran out)`;
    let index: number | undefined;
    /** The submit its answer names (`answerSubmit`), once its record is read. */
    let submit: string | undefined;
    try {
      const body = decodeTask(stored.body);
      index = body.index;
      // A lane task of a submit rolled back: the committed submit's copy of it is the job's.
      const record =
        body.submit === undefined ? undefined : storedRecord(server, "dead-letters.process", jobId)?.record;
      if (ofOtherSubmit(record, body.submit)) {
        tasks.remove(advisory.seq);
        continue;
      }
      submit = answerSubmit(record, body);
      const letter = storeDeadLetter(
        server,
        {
          queue,
          jobId,
          index: body.index,
          payload: body.payload,
          error,
          deliveries: advisory.deliveries,
          at: server.clock.now(),
          source: "advisory",
          ...(submit === undefined ? {} : { submit }),
        },
        `dead.${jobId}.${advisory.seq}`,
      );
      appendResults(
        server,
        queue,
        jobId,
        encodeDeadResult(body.index, error, letter, submit),
        `deadresult.${jobId}.${advisory.seq}`,
      );
    } catch (failure) {
      if (stop.aborted) return;
      let countedDead = false;
      if (index !== undefined) {
        const reason = `${error}; dead letter not stored: ${failure instanceof Error ? failure.message : String(failure)}`;
        try {
          appendResults(
            server,
            queue,
            jobId,
            encodeDeadResult(index, reason, undefined, submit),
            `deadresult.${jobId}.${advisory.seq}`,
          );
          countedDead = true;
        } catch {
          // Told below: the job cannot count it.
        }
      }
      onUnhandled?.({ queue, jobId, index, error: failure, countedDead });
    }
    tasks.remove(advisory.seq);
  }
};

/** The queue of a stored task, from its subject `<prefix>.tasks.<queue>.<jobId>` or `….<queue>.lane.<jobId>`. */
const queueOfTask = (server: MemoryServerState, subject: string): string =>
  subject.slice(`${server.prefix}.tasks.`.length).split(".")[0] ?? "";
