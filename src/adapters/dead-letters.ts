import type { JobTasksRef } from "../kernel/job-record.ts";

/** A task that exhausted its deliveries, kept with its payload so it can be redriven. */
/** A task's message in its queue's tasks stream: its sequence, and the task's index in its job. */
export interface TaskMessageRef {
  readonly seq: number;
  readonly index: number;
}

export interface DeadLetter {
  readonly queue: string;
  readonly jobId: string;
  readonly index: number;
  readonly taskId: string;
  /** The task's payload, as submitted. */
  readonly payload: unknown;
  readonly error: string;
  readonly deliveries: number;
  readonly at: number;
  /** `worker`: the handler failed on the last delivery; `advisory`: nobody answered it (worker died, lease ran out). */
  readonly source: "worker" | "advisory";
  /** The task message that died, in its queue's tasks stream (a worker's letter: `DeadLetterFields`). */
  readonly taskSeq?: number;
  /** The submit whose task died, on a 1-task lane job (`DeadLetterFields.submit`). */
  readonly submit?: string;
  /** Position in the dead-letter store (for removal on redrive). */
  readonly seq: number;
}

/** An exhausted task whose dead letter could not be stored (a permanent error). */
export interface UnhandledExhausted {
  readonly queue: string;
  readonly jobId: string;
  /** The task's index; undefined when its message is not a task of jetstate's. */
  readonly index: number | undefined;
  readonly error: unknown;
  /** Whether its `dead` result was stored, so the job counts it and can end. */
  readonly countedDead: boolean;
}

/** Tasks that exhausted their deliveries: captured, stored, listed for a redrive, removed after it. */
export interface DeadLetters {
  /** Makes sure the queue's exhausted tasks are captured from now on (before a job of it could exhaust one). */
  ensureDeadLetters(queue: string): Promise<void>;
  /**
   * Stores a dead letter; `msgId` makes a retried store land once. Answers its sequence in the
   * store (`DeadLetter.seq`; a retried store's, the first's): its task's dead answer names it.
   */
  storeDeadLetter(letter: Omit<DeadLetter, "seq" | "taskId">, msgId: string): Promise<number>;
  /**
   * Every stored letter of the job, in the order stored: a task can have
   * two (its worker's, and the advisory path's when the worker's term was
   * lost); `firstLetters` keeps one per task.
   */
  listDeadLetters(queue: string, jobId: string): Promise<DeadLetter[]>;
  removeDeadLetters(seqs: readonly number[]): Promise<void>;
  /**
   * Deletes dead tasks' own messages (`DeadLetter.taskSeq`, with the letter's task index)
   * from the job's queue's tasks stream: one whose term was lost is stored still, and its
   * advisory would come. Only a message still the job's task of that index goes (a store
   * made again since the letter starts its sequences over: another job's task, or another
   * task of the job made again, may have that sequence now; `isTaskMessage`), and never one
   * past the stream's end (a clustered nats-server 2.9 never answers that delete and resets
   * the stream's group). One gone already is no error.
   */
  removeTaskMessages(job: JobTasksRef, tasks: readonly TaskMessageRef[]): Promise<void>;
  /**
   * Turns tasks that exhausted their deliveries unanswered into dead letters
   * and `dead` results, on every queue (those set up by any runtime, found as
   * they appear), until `signal` aborts. An exhausted task that cannot
   * be dead-lettered for a reason a retry cannot fix is never retried: it is
   * counted dead for its job if it can be, removed, and told to `onUnhandled`.
   */
  processExhausted(signal: AbortSignal, onUnhandled?: (failure: UnhandledExhausted) => void): Promise<void>;
}

/**
 * The letters of the record's submit: one naming another (a rolled-back submit's late task
 * that died before its rollback's mark) is not the next submit's of the key, whose task may
 * never die. A letter naming none (any job but a 1-task lane one, or written before letters
 * named theirs) is the record's.
 */
export const lettersOfSubmit = (letters: DeadLetter[], submitId: string): DeadLetter[] =>
  letters.filter((l) => l.submit === undefined || l.submit === submitId);

/** One letter per task, the first stored (`listDeadLetters` gives them all), in task order. */
export const firstLetters = (letters: readonly DeadLetter[]): DeadLetter[] => {
  const byIndex = new Map<number, DeadLetter>();
  for (const l of letters) if (!byIndex.has(l.index)) byIndex.set(l.index, l);
  return [...byIndex.values()].sort((a, b) => a.index - b.index);
};
