import { workOver } from "../../kernel/errors.ts";
import type { FollowOptions, JobResults } from "../job-results.ts";
import { appendResults } from "./memory-dead-letters.ts";
import { publishNote, watchNotes } from "./memory-notes.ts";
import { checkToken } from "./memory-server.ts";
import type { MemoryBrokerCore } from "./memory-task-queue.ts";
import { indexAfter } from "./message-log.ts";

/**
 * A job's results on the memory broker (adapters/job-results.ts is the
 * port): the server's results log, read by a loop of each reader's own, and
 * the job's progress notes, never stored.
 */
export const memoryResults = ({ server, open, stop: brokerStop, until }: MemoryBrokerCore): JobResults => {
  const results: JobResults = {
    publishResults: async (queue, jobId, body, msgId) => {
      open("job.results.publish");
      appendResults(server, queue, jobId, body, msgId);
    },

    readResults: async (queue, jobId, onMessage, signal, onCaughtUp) => {
      const op = "job.results.read";
      open(op);
      const subject = server.names.resultsSubject(
        checkToken(op, "queue", queue),
        checkToken(op, "jobId", jobId),
      );
      const { stop, done } = until(signal);
      const log = server.results;
      try {
        // Asynchronous from the first message on, as a consumer's deliveries are.
        await Promise.resolve();
        if (!stop.aborted && log.read(subject).length === 0) onCaughtUp?.();
        let last = 0;
        while (!stop.aborted) {
          for (;;) {
            const messages = log.read(subject);
            const at = indexAfter(messages, last);
            const message = messages[at];
            if (message === undefined || stop.aborted) break;
            last = message.seq;
            try {
              onMessage(message.body, messages.length - at - 1);
            } catch {
              // As on NATS, where the restarted reader goes on after the message it handed over.
            }
          }
          await log.next(subject, last, stop);
        }
      } finally {
        done();
      }
    },

    followResults: (queue, jobId, onMessage, { onCaughtUp, onFailed }: FollowOptions) => {
      // Here a reader is a loop of its own, with a signal of its own (linked, `until`).
      const following = new AbortController();
      results
        .readResults(queue, jobId, onMessage, following.signal, onCaughtUp)
        .catch((error: unknown) => onFailed?.(error));
      return () => following.abort(workOver);
    },

    publishProgress: (queue, jobId, body) => {
      if (brokerStop.aborted) return;
      publishNote(server, server.names.progressSubject(queue, jobId), body);
    },

    watchProgress: (queue, jobId, onNote, signal) => {
      const subject = server.names.progressSubject(queue, jobId);
      watchNotes(server, subject, onNote, AbortSignal.any([signal, brokerStop]));
    },
  };
  return results;
};
