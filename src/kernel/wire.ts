import { MalformedMessage } from "./errors.ts";
import { excerpt, isIndex, isObject, parse, reason } from "./wire-reads.ts";

/**
 * The message formats of the tasks stream, the progress subject and the
 * delayed stream, written and read here only (results: result-wire.ts;
 * dead letters: dead-letter.ts):
 *
 * - a task: `{"i":<index>,"p":<payload>}`; a task of a lane job also names the submit that
 *   published it, `{"i":<index>,"s":"<submitId>","p":<payload>}` (`withSubmit`);
 * - a progress note: `{"i":n,"info":<info>}`, best effort, never stored;
 * - a held (delayed) task: `{"d":<due, ms since epoch>,"q":"<queue>","m":"<its task message id>","t":<task message>}`
 *   on the delayed stream, until the mover publishes `t` with id `m` to its job's subject.
 *
 * Writers concatenate strings and stringify only the user's value; readers
 * validate and throw `MalformedMessage`.
 */

/** A task as a worker reads it. */
export interface TaskBody {
  readonly index: number;
  readonly payload: unknown;
  /**
   * The submit that published it (its record's `submitId` then), on a lane
   * job only: another submit of the job's key may follow a rolled-back one
   * while the rolled-back one's tasks are still stored.
   */
  readonly submit?: string;
}

/** One progress note of one task. */
export interface TaskProgress {
  readonly taskId: string;
  readonly index: number;
  /** What the handler passed to `ctx.progress`, as JSON carries it. */
  readonly info: unknown;
}

/** The task's message; throws `MalformedMessage` for a payload JSON cannot carry (cycle, BigInt, undefined, a function). */
export const encodeTask = (index: number, payload: unknown): string => {
  let json: string | undefined;
  try {
    json = JSON.stringify(payload);
  } catch (error) {
    throw new MalformedMessage({
      format: "task",
      message: `cannot be serialised to JSON (${reason(error)})`,
    });
  }
  if (json === undefined) {
    throw new MalformedMessage({
      format: "task",
      message: "cannot be serialised to JSON (undefined or a function)",
    });
  }
  return `{"i":${index},"p":${json}}`;
};

export const decodeTask = (body: string): TaskBody => {
  const task = parse(body, "task");
  if (!isObject(task) || !isIndex(task.i) || !("p" in task)) {
    throw new MalformedMessage({
      format: "task",
      message: `not a task message ({"i":<index>,"p":<payload>}): ${excerpt(body)}`,
    });
  }
  return typeof task.s === "string"
    ? { index: task.i, payload: task.p, submit: task.s }
    : { index: task.i, payload: task.p };
};

/** The task index a task message names; undefined when it is not a task message. */
export const taskIndexOf = (body: string): number | undefined => {
  try {
    return decodeTask(body).index;
  } catch {
    return undefined;
  }
};

/**
 * The task's message `body` (as `encodeTask` wrote it for `index`) naming the
 * submit that publishes it: `{"i":<index>,"s":"<submitId>","p":<payload>}`.
 */
export const withSubmit = (body: string, index: number, submitId: string): string => {
  const head = `{"i":${index},`;
  if (!body.startsWith(head)) throw new Error(`not the message of task ${index}: ${excerpt(body)}`);
  return `${head}"s":${JSON.stringify(submitId)},${body.slice(head.length)}`;
};

/** Whether a stored task message is of `submitId`'s job: it names that submit, or none (it is its record's). */
export const taskOfSubmit = (body: string, submitId: string): boolean => {
  try {
    const { submit } = decodeTask(body);
    return submit === undefined || submit === submitId;
  } catch {
    return true;
  }
};

/** The note's body, or undefined when `info` cannot be sent as JSON (a note is best effort: dropped). */
export const encodeProgress = (index: number, info: unknown): string | undefined => {
  try {
    const json = JSON.stringify(info ?? null);
    return json === undefined ? undefined : `{"i":${index},"info":${json}}`;
  } catch {
    return undefined;
  }
};

export const decodeProgress = (jobId: string, body: string): TaskProgress => {
  const note = parse(body, "progress");
  if (!isObject(note) || !isIndex(note.i)) {
    throw new MalformedMessage({
      format: "progress",
      message: `not a progress note ({"i":<index>,"info":<info>}): ${excerpt(body)}`,
    });
  }
  return { taskId: `${jobId}.${note.i}`, index: note.i, info: note.info };
};

/** A delayed task as the delayed stream holds it: its due time, the message id it will be published with, its body. */
export interface HeldTaskBody {
  readonly dueAt: number;
  readonly msgId: string;
  readonly body: string;
}

/**
 * The task body is a task message already: it is embedded as it is, not
 * parsed again. The queue is in it because a memory delivery names only its
 * job (its subject's last token).
 */
export const encodeHeld = (queue: string, held: HeldTaskBody): string =>
  `{"d":${held.dueAt},"q":${JSON.stringify(queue)},"m":${JSON.stringify(held.msgId)},"t":${held.body}}`;

export const decodeHeld = (text: string): HeldTaskBody & { readonly queue: string } => {
  const held = parse(text, "held task");
  if (
    !isObject(held) ||
    !Number.isFinite(held.d) ||
    typeof held.q !== "string" ||
    typeof held.m !== "string" ||
    !isObject(held.t)
  ) {
    throw new MalformedMessage({
      format: "held task",
      message: `not a held task ({"d":<due>,"q":"<queue>","m":"<id>","t":<task>}): ${excerpt(text)}`,
    });
  }
  return { dueAt: held.d as number, queue: held.q, msgId: held.m, body: JSON.stringify(held.t) };
};
