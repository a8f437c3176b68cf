/**
 * The progress-note wire format: what `ctx.progress(info)` in a handler
 * sends and `handle.onProgress` receives. Notes are best effort and never
 * stored: a watcher sees the notes published while it listens, none before.
 */

/** One progress note of one task. */
export interface TaskProgress {
  readonly taskId: string;
  readonly index: number;
  /** What the handler passed to `ctx.progress`, as JSON carries it. */
  readonly info: unknown;
}

/** The note's body, or undefined when `info` cannot be sent as JSON. */
export const encodeProgress = (index: number, info: unknown): string | undefined => {
  try {
    const json = JSON.stringify(info ?? null);
    return json === undefined ? undefined : `{"i":${index},"info":${json}}`;
  } catch {
    return undefined;
  }
};

/** The note, or undefined for a body that is not one (someone else's message on the subject). */
export const decodeProgress = (jobId: string, body: string): TaskProgress | undefined => {
  try {
    const note = JSON.parse(body) as { i?: unknown; info?: unknown };
    if (typeof note?.i !== "number") return undefined;
    return { taskId: `${jobId}.${note.i}`, index: note.i, info: note.info };
  } catch {
    return undefined;
  }
};
