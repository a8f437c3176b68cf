import { Effect, Option, Schema, SchemaGetter } from "effect";
import { decode } from "./decode.ts";
import { InvalidArgument } from "./errors.ts";
import { JobStatus } from "./job-record.ts";
import { decodeCursor, defaultPageLimit, type ListCursor, maxPageLimit } from "./list-page.ts";

/**
 * The shapes of everything a user hands jetstate: ids, keys, names, tokens,
 * durations, counts. One definition each, checked before anything is sent:
 * a name or id too long for the server's control line (4 KiB) would make it
 * close the runtime's only connection, so the error must come from here, as
 * an `InvalidArgument` naming the field.
 */

/** The longest delay a Node timer can wait (2^31 − 1 ms, ~24.8 days): a longer one fires at once. */
export const maxTimerMs = 2_147_483_647;

const text = (min: number, max: number, pattern: RegExp, rule: string) =>
  Schema.String.check(
    Schema.isMinLength(min, { message: `must not be empty (${rule})` }),
    Schema.isMaxLength(max, { message: `is too long (${rule})` }),
    Schema.isPattern(pattern, { message: `must be ${rule}` }),
  );

/** Printable text: no control characters (newlines, NUL…), which logs and headers would mangle. */
const printable = /^[^\p{Cc}]*$/u;

/** The characters of a subject token as jetstate names things (queues, job ids, the prefix): the one definition. */
export const tokenChars = "A-Za-z0-9_-";
const tokens = new RegExp(`^[${tokenChars}]+$`);
/** A queue name or job id, for code outside a schema (route parameters, OpenAPI patterns). */
export const subjectTokenPattern = new RegExp(`^[${tokenChars}]{1,128}$`);

/** Queue names, job ids: one subject token, which is also a KV key and a consumer name. */
export const SubjectToken = text(1, 128, tokens, '1–128 of A–Z a–z 0–9 _ -; no ".", "*", ">" or spaces');

/** The runtime's prefix: the first token of every stream and bucket name, kept short so theirs stay valid. */
export const Prefix = text(1, 64, tokens, "1–64 of A–Z a–z 0–9 _ -");

/** Agent ids are KV keys on every store: the same id is good or bad on NATS and in memory. */
export const AgentId = text(
  1,
  128,
  /^[-/=\w]+(?:\.[-/=\w]+)*$/,
  "1–128 of letters, digits, - / _ = and single dots, not at either end",
);

/** Names chosen by the user and stored or logged, never put in a subject: targets, connection names. */
export const Label = text(1, 256, printable, "1–256 characters, no control characters");

/** Idempotency keys are hashed into the job id: any printable text, bounded. */
export const IdempotencyKey = text(1, 512, printable, "1–512 characters, no control characters");

/** A task named for redrive: its index, or its id `<jobId>.<index>` (or the index as text). */
const TaskRef = Schema.Union([
  Schema.Number.check(
    Schema.isInt({ message: "a task index must be an integer ≥ 0" }),
    Schema.isGreaterThanOrEqualTo(0, { message: "a task index must be an integer ≥ 0" }),
  ),
  text(
    1,
    140,
    new RegExp(`^(?:[${tokenChars}]{1,128}\\.)?\\d{1,9}$`),
    "a task index or a task id <jobId>.<index>",
  ),
]);

/** A bearer token of the HTTP API: what RFC 6750 allows in the header (visible ASCII, no spaces). */
export const BearerToken = text(16, 1024, /^[\x21-\x7e]+$/, "16–1024 visible ASCII characters, no spaces");

/** The worker identity a bearer token names: logged and put in lease records. */
export const WorkerIdentity = text(1, 128, /^[\w.@:/-]+$/, "1–128 of letters, digits and _ . @ : / -");

/** A finite number in [min, max]; `integer` for counts. */
export const number = (min: number, max: number, { integer = false } = {}) => {
  const range = `${integer ? "an integer" : "a number"} between ${min} and ${max}`;
  const checks = [
    Schema.isFinite({ message: `must be ${range}` }),
    Schema.isBetween({ minimum: min, maximum: max }, { message: `must be ${range}` }),
    ...(integer ? [Schema.isInt({ message: `must be ${range}` })] : []),
  ] as const;
  return Schema.Number.check(...checks);
};

/** A duration in ms that a timer waits for: > 0 (or ≥ 0) and at most what a Node timer can wait. */
export const TimerMs = number(1, maxTimerMs);
export const TimerMsOrZero = number(0, maxTimerMs);

/** An optional field that decodes to `value` when absent or undefined. */
export const withDefault = <S extends Schema.Top>(shape: S, value: S["Encoded"]) =>
  shape.pipe(Schema.withDecodingDefault(Effect.succeed(value)));

/**
 * A nested options object (`connection`, `connection.backoff`): absent,
 * undefined or null decodes as `{}`, so each of its fields takes its default.
 */
export const section = <S extends Schema.Top>(shape: S) =>
  Schema.optional(Schema.Unknown).pipe(
    Schema.decodeTo(shape, {
      decode: SchemaGetter.transformOptional(
        (given: Option.Option<unknown>) =>
          Option.some(Option.getOrNull(given) ?? {}) as Option.Option<S["Encoded"]>,
      ),
      encode: SchemaGetter.passthrough({ strict: false }),
    }),
  );

/** The value if it has the shape; else throws `InvalidArgument` naming the field. */
export const check = <T>(shape: Schema.Decoder<T>, value: unknown, field: string): T => {
  const result = decode(shape, value, field);
  if (result.ok) return result.value;
  throw new InvalidArgument({ message: `${result.field}: ${result.message}`, field: result.field });
};

/** `check` for an optional value: the fallback when undefined. */
export const checkOr = <T>(shape: Schema.Decoder<T>, value: unknown, field: string, fallback: T): T =>
  value === undefined ? fallback : check(shape, value, field);

/** The task indexes named for a redrive (undefined: all dead tasks); each entry is checked. */
export const taskIndexes = (taskIds: unknown): number[] | undefined => {
  if (taskIds === undefined) return undefined;
  if (!Array.isArray(taskIds) || taskIds.length > maxTasksNamed) {
    throw new InvalidArgument({
      message: `taskIds: must be a list of at most ${maxTasksNamed} task ids or indexes`,
      field: "taskIds",
    });
  }
  return taskIds.map((ref, n) => {
    const valid = check(TaskRef, ref, `taskIds[${n}]`);
    return typeof valid === "number" ? valid : Number(valid.split(".").pop());
  });
};
const maxTasksNamed = 1_000_000;

const Status = Schema.Literals(Object.values(JobStatus));

/** `rt.jobs.list(query)` once checked: the position to start after is the cursor decoded. */
export interface ListQuery {
  readonly status?: JobStatus;
  readonly queue?: string;
  readonly limit: number;
  /** The cursor of the page before (its position, and the listing it belongs to). */
  readonly after?: ListCursor;
}

const PageLimit = number(1, maxPageLimit, { integer: true });

/**
 * `rt.jobs.list(query)`: a status jetstate knows, a queue name, a page size
 * and a cursor from an earlier page, each optional, nothing else (a misspelt
 * `cursor` would list the first page again and again).
 */
export const checkListQuery = (query: unknown): ListQuery => {
  if (typeof query !== "object" || query === null) {
    throw new InvalidArgument({ message: "query: must be an object", field: "query" });
  }
  rejectUnknownKeys(query, ["status", "queue", "limit", "cursor"], "");
  const { status, queue, limit, cursor } = query as Record<string, unknown>;
  const after = cursor === undefined ? undefined : decodeCursor(cursor);
  if (cursor !== undefined && after === undefined) {
    throw new InvalidArgument({
      message: "cursor: not a cursor jetstate gave (pass the `next` of the page before)",
      field: "cursor",
    });
  }
  return {
    ...(status === undefined ? {} : { status: check(Status, status, "status") }),
    ...(queue === undefined ? {} : { queue: check(SubjectToken, queue, "queue") }),
    limit: checkOr(PageLimit, limit, "limit", defaultPageLimit),
    ...(after === undefined ? {} : { after }),
  };
};

const RetentionMs = number(0, Number.MAX_SAFE_INTEGER);

/** `rt.admin.cleanup(options)`: a retention that is a real duration, a boolean `dryRun`, nothing else. */
export const checkCleanupOptions = (options: unknown): void => {
  if (typeof options !== "object" || options === null) {
    throw new InvalidArgument({ message: "options: must be an object", field: "options" });
  }
  for (const key of Object.keys(options)) {
    if (key !== "dryRun" && key !== "retentionMs") {
      throw new InvalidArgument({
        message: `${key}: unknown option (known: dryRun, retentionMs)`,
        field: key,
      });
    }
  }
  const { dryRun, retentionMs } = options as { dryRun?: unknown; retentionMs?: unknown };
  if (dryRun !== undefined && typeof dryRun !== "boolean") {
    throw new InvalidArgument({ message: "dryRun: must be a boolean", field: "dryRun" });
  }
  if (retentionMs !== undefined) check(RetentionMs, retentionMs, "retentionMs");
};

/** Options objects are closed: a misspelt key is an error naming it, not a silently ignored setting. */
export const rejectUnknownKeys = (value: object, known: readonly string[], path: string): void => {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      const field = path ? `${path}.${key}` : key;
      throw new InvalidArgument({ field, message: `${field}: unknown option (known: ${known.join(", ")})` });
    }
  }
};
