/**
 * What tasks answered (stored, in order) and how far they got (never
 * stored): the results stream and the progress notes of a job.
 */
export interface JobResults {
  /** One results message (a JSON array); `msgId` makes a retried publish land once. */
  publishResults(queue: string, jobId: string, body: string, msgId: string): Promise<void>;

  /**
   * Reads the job's results messages in order from the start, until `signal`
   * aborts; a signal that aborts when the runtime stops, or `rt.stop()`
   * waits for the read. `pending` is 0 once the reader is caught up (the last message
   * stored when it started, and every one after), more than 0 before: how
   * many more are stored, or at least 1 where the broker does not count them
   * (NATS reads a few stored messages one get at a time).
   * `onCaughtUp` is called at once when there is nothing to read yet.
   * `fresh`: the caller knows nothing of the job is stored yet (its submit
   * has not published a task), so the broker may skip looking.
   */
  readResults(
    queue: string,
    jobId: string,
    onMessage: (body: string, pending: number) => void,
    signal: AbortSignal,
    onCaughtUp?: () => void,
    fresh?: boolean,
  ): Promise<void>;

  /**
   * Follows the job's results messages as `readResults` reads them (in order
   * from the start, the same `pending`, `onCaughtUp` and `fresh`) until the
   * function it returns is called: a job actor's feed, for the job's whole
   * life. No abort signal: a live job held one only for this, ~1 KB of heap
   * each (its two maps and its own hidden class). A read that fails is
   * handed to `onFailed`; the follow is over then.
   */
  followResults(
    queue: string,
    jobId: string,
    onMessage: (body: string, pending: number) => void,
    options: FollowOptions,
  ): () => void;

  /**
   * Best effort, never stored: one task's progress note to whoever watches
   * the job right now (core NATS, `<prefix>.progress.<queue>.<jobId>`).
   * Dropped while disconnected, or when too large; never throws.
   */
  publishProgress(queue: string, jobId: string, body: string): void;
  /** Calls `onNote` with each progress note of the job published from now on, until `signal` aborts. */
  watchProgress(queue: string, jobId: string, onNote: (body: string) => void, signal: AbortSignal): void;
}

/** How a job's feed follows its results (`JobResults.followResults`). */
export interface FollowOptions {
  /** Called at once when there is nothing to read yet, else once caught up. */
  readonly onCaughtUp?: () => void;
  /** Nothing of the job is stored yet (its submit has not published a task): the broker may skip looking. */
  readonly fresh?: boolean;
  /** A read failed (the follow is over): why. */
  readonly onFailed?: (error: unknown) => void;
}
