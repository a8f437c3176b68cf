import { boundError } from "./dead-letter.ts";
import { MalformedMessage } from "./errors.ts";
import { excerpt, isIndex, isObject, parse, reason } from "./wire-reads.ts";

/**
 * The message format of the results streams, written and read here only
 * (tasks, progress notes and held tasks: wire.ts):
 *
 * - a result entry: `{"i":n,"ok":true,"r":<result>}`, `{"i":n,"ok":false,"e":"<error>"}`
 *   (`,"dead":true` when its last delivery failed, then `,"l":<seq>`: its dead letter, written
 *   just before it, by its sequence in the dead-letter store; `,"again":true` on a death a
 *   refused redrive stores again, `encodeDeathAgain`), or a redrive marker
 *   `{"i":n,"redrive":true,"id":"<redrive>","l":[<seq>,…]}` ("forget the dead answer of task
 *   n"; `id` is the redrive's, as its record write names it; `l` the letters of task n it sends
 *   back). A marker takes back the task's dead answer only if it names that answer's letter
 *   (`takesBack`, job-progress.ts): a redrive whose marker lands after the copy another redrive
 *   sent has died again leaves that new death counted. A dead answer stored after a marker that
 *   found its task with no answer counted and names its letter (a worker stores the letter
 *   first: a redrive may read it and store its marker before the death) is taken back as it
 *   lands (`takenAhead`): the redrive's copy answers for the task. Entries of earlier versions
 *   name no letter (no `l`; no `id` either in markers older still), and a dead answer whose
 *   letter was not stored names none: with either side naming none, a marker takes back the
 *   dead answer before it, and none after it, as those versions did. An answer of a task of a
 *   1-task lane job ends with the submit that published the task, `,"s":"<submitId>"}`
 *   (`withAnswerSubmit`): its task is its commit, and another submit of its key may follow a
 *   rolled-back one whose task ran; readers count only their submit's (`answersOfSubmit`). So
 *   do a redrive's markers and the deaths it stores again there, naming the submit it read: a
 *   marker takes back only deaths of its own submit, or naming none (an earlier version's);
 * - a results message: a JSON array of entries, many tasks per message;
 *
 * Writers concatenate strings and stringify only the user's value: the
 * entries of a batch are joined as they are, never parsed and written again
 * (the worker's hot path). Readers validate and throw `MalformedMessage`.
 */

/** One entry of a results message, as read. */
export type ResultRecord =
  | {
      readonly i: number;
      readonly ok: true;
      readonly r?: unknown;
      /** The submit whose task it answers (`withAnswerSubmit`); absent but on a 1-task lane job's. */
      readonly s?: string;
      readonly redrive?: undefined;
    }
  | {
      readonly i: number;
      readonly ok: false;
      readonly s?: string;
      readonly e?: string;
      readonly dead?: boolean;
      /** A dead answer's letter (its sequence in the dead-letter store); absent in earlier versions'. */
      readonly l?: number;
      /** Stored again by a refused redrive (`encodeDeathAgain`). */
      readonly again?: boolean;
      readonly redrive?: undefined;
    }
  | {
      readonly i: number;
      readonly redrive: true;
      readonly id?: string;
      /** The letters of the task the redrive sends back; absent in earlier versions' markers. */
      readonly l?: readonly number[];
      readonly ok?: undefined;
      /** The submit the redrive read (`publishInBatches`); absent but on a 1-task lane job's. */
      readonly s?: string;
    };

/**
 * An answer entry (`encodeDone`, `encodeFailed`, `encodeDoneJson`) naming the submit that
 * published its task: a 1-task lane job's, whose task is its commit point. A redrive's markers
 * and deaths stored again name the submit it read (`publishInBatches`).
 */
export const withAnswerSubmit = (entry: string, submitId: string): string =>
  `${entry.slice(0, -1)},"s":${JSON.stringify(submitId)}}`;

/** The entries of `submitId`'s job: an answer naming another submit (a rolled-back one of the key) is not. */
export const answersOfSubmit = (entries: ResultRecord[], submitId: string | undefined): ResultRecord[] => {
  const own = (entry: ResultRecord) => entry.s === undefined || entry.s === submitId;
  // Most messages name no other submit: kept as they are, no copy (a worker's hot path).
  return submitId === undefined || entries.every(own) ? entries : entries.filter(own);
};

/**
 * A success entry; `undefined` is stored as null. A value JSON cannot carry is a
 * `MalformedMessage`, which is permanent (the task fails at once, never retried):
 * one JSON.stringify throws its TypeError on (a cycle, a BigInt), and one it turns
 * into nothing (a function, a symbol), which would break the whole results message.
 * An error of another type, thrown by a value's own `toJSON`, is thrown as it is: a
 * handler error like any other, decided by its type.
 */
export const encodeDone = (index: number, value: unknown): string => {
  let json: string | undefined;
  try {
    json = JSON.stringify(value ?? null);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    throw new MalformedMessage({
      format: "result",
      message: `result of task ${index} cannot be serialised to JSON (${reason(error)})`,
    });
  }
  if (json === undefined) {
    throw new MalformedMessage({
      format: "result",
      message: `result of task ${index} cannot be serialised to JSON (a function or a symbol)`,
    });
  }
  return `{"i":${index},"ok":true,"r":${json}}`;
};

/** A success entry whose result is JSON text already (checked by whoever parsed it: the HTTP API). */
export const encodeDoneJson = (index: number, json: string): string => `{"i":${index},"ok":true,"r":${json}}`;

/**
 * A failure entry: `dead` when the task's last delivery failed (counted dead, may be redriven),
 * naming its dead letter (`letter`, its sequence in the dead-letter store) when it has one.
 */
export const encodeFailed = (index: number, error: string, dead: boolean, letter?: number): string =>
  `{"i":${index},"ok":false,"e":${JSON.stringify(error)}${dead ? `,"dead":true${letter === undefined ? "" : `,"l":${letter}`}` : ""}}`;

/**
 * A dead answer a refused redrive stores again after its marker took it back (`"again":true`):
 * no copy of the task runs, so this death is the task's answer, and no marker ahead of it takes
 * it back as it lands (`takenAhead`, job-progress.ts). Earlier versions read it as any death.
 */
export const encodeDeathAgain = (index: number, error: string, letter?: number): string =>
  `${encodeFailed(index, error, true, letter).slice(0, -1)},"again":true}`;

/** A dead answer `encodeFailed` wrote, naming its letter (its sequence in the dead-letter store) now it is stored. */
export const withLetter = (entry: string, letter: number): string => `${entry.slice(0, -1)},"l":${letter}}`;

/**
 * The results message of a task that died unanswered (its error bounded like a dead letter's),
 * naming its letter, and the submit that published it on a 1-task lane job (`withAnswerSubmit`).
 */
export const encodeDeadResult = (index: number, error: string, letter?: number, submit?: string): string => {
  const entry = encodeFailed(index, boundError(error), true, letter);
  return encodeBatch([submit === undefined ? entry : withAnswerSubmit(entry, submit)]);
};

/**
 * "Forget the dead answer of task `index`": written before the task is sent again, named by
 * the redrive (`id`, the record's `redrive`): the supervisor knows which redrives it counted;
 * naming the task's letters it sends back (`letters`, their sequences in the dead-letter
 * store): it takes back only a dead answer of one of them.
 */
export const encodeRedrive = (index: number, id?: string, letters?: readonly number[]): string =>
  id === undefined
    ? `{"i":${index},"redrive":true}`
    : `{"i":${index},"redrive":true,"id":${JSON.stringify(id)}${letters === undefined ? "" : `,"l":[${letters.join(",")}]`}}`;

/**
 * The id of a redrive whose markers name it: `<hash>-2`. A marker with no id was written by an
 * earlier version: 0.2 (whose redrives store no id in the record) or a build before markers
 * named their redrive (its ids eight letters and digits, never a dash). It stands only for
 * such a redrive, never for one whose markers name it.
 */
export const namingRedriveId = (hash: string): string => `${hash}-2`;

/** True when the redrive's markers name it (`namingRedriveId`); false for an earlier version's. */
const redriveNamesMarkers = (redrive: string): boolean => redrive.includes("-");

/** True when a redrive marker counted (`""`: one with no id) stands for that redrive. */
export const markerCounts = (marker: string, redrive: string): boolean =>
  marker === redrive || (marker === "" && !redriveNamesMarkers(redrive));

/** One results message of entries written by the encoders above. */
export const encodeBatch = (entries: readonly string[]): string => `[${entries.join(",")}]`;

/** Bytes of a results message with no entry (its brackets). */
export const emptyBatchBytes = 2;

/** Bytes (UTF-8) one entry adds to a results message, its comma included. */
export const entryBytes = (entry: string): number => Buffer.byteLength(entry) + 1;

/**
 * Entries in order, cut into results messages of at most `maxBytes` each
 * (`encodeBatch`): as many as fit in each, at least one.
 */
export const batchesUnder = (entries: readonly string[], maxBytes: number): string[][] => {
  const batches: string[][] = [];
  let batch: string[] = [];
  let bytes = emptyBatchBytes;
  for (const entry of entries) {
    // Its comma too after the first.
    const size = Buffer.byteLength(entry);
    if (batch.length > 0 && bytes + 1 + size > maxBytes) {
      batches.push(batch);
      batch = [];
      bytes = emptyBatchBytes;
    }
    bytes += (batch.length > 0 ? 1 : 0) + size;
    batch.push(entry);
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
};

/** True if a results message of this entry alone takes at most `maxBytes`. */
export const fitsAlone = (entry: string, maxBytes: number): boolean =>
  // At most three bytes per UTF-16 unit: most entries are counted without encoding them.
  entry.length * 3 + emptyBatchBytes <= maxBytes || Buffer.byteLength(entry) + emptyBatchBytes <= maxBytes;

const isResult = (entry: unknown): entry is ResultRecord => {
  if (!isObject(entry) || !isIndex(entry.i)) return false;
  if (entry.redrive === true)
    return (
      entry.ok === undefined &&
      (entry.id === undefined || typeof entry.id === "string") &&
      (entry.s === undefined || typeof entry.s === "string") &&
      (entry.l === undefined || (Array.isArray(entry.l) && entry.l.every(isIndex)))
    );
  if (entry.redrive !== undefined) return false;
  if (entry.s !== undefined && typeof entry.s !== "string") return false;
  if (entry.ok === true) return true;
  return (
    entry.ok === false &&
    (entry.e === undefined || typeof entry.e === "string") &&
    (entry.dead === undefined || typeof entry.dead === "boolean") &&
    (entry.l === undefined || isIndex(entry.l)) &&
    (entry.again === undefined || typeof entry.again === "boolean")
  );
};

/** The entries of one results message; a message with any entry that is not one is refused whole. */
export const decodeResults = (body: string): ResultRecord[] => {
  const entries = parse(body, "result");
  if (!Array.isArray(entries)) {
    throw new MalformedMessage({
      format: "result",
      message: `results message is not an array: ${excerpt(body)}`,
    });
  }
  for (const [n, entry] of entries.entries()) {
    if (!isResult(entry)) {
      throw new MalformedMessage({
        format: "result",
        message: `results message entry ${n} is not a result: ${excerpt(JSON.stringify(entry) ?? "undefined")}`,
      });
    }
  }
  return entries;
};

/**
 * Whether a results message holds an answer of `submitId`'s job: not only
 * redrive markers (a marker takes the answer before it back), and written by
 * jetstate. Undefined when every entry answers another submit of the key (a
 * rolled-back one's task that ran): the message says nothing of this one.
 */
export const holdsAnswer = (body: string, submitId: string): boolean | undefined => {
  let entries: ResultRecord[];
  try {
    entries = decodeResults(body);
  } catch {
    return false;
  }
  const own = answersOfSubmit(entries, submitId);
  if (own.length === 0 && entries.length > 0) return undefined;
  return own.some((entry) => entry.redrive !== true);
};
