import { badRequest, ErrorCode, HttpError } from "./http-errors.ts";

/**
 * Reading and checking request bodies: bounded in bytes (the declared
 * Content-Length and the bytes actually read), parsed as JSON, then checked
 * field by field so a 400 names the field. The OpenAPI document
 * (openapi.ts) describes the same shapes; a unit test keeps them in step.
 */

/**
 * Reads the body as JSON within `maxBytes`: 413 past it, 400 if it is not
 * JSON. The Content-Type is not checked: `curl -d` and `fetch` with a string
 * body send other types, and with bearer tokens there is no form-post
 * forgery for a strict type to stop.
 */
export const readJson = async (request: Request, maxBytes: number): Promise<unknown> => {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge(maxBytes);
  const bytes = await readAtMost(request, maxBytes);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new HttpError(400, ErrorCode.invalidJson, "the body is not UTF-8");
  }
  if (text.trim() === "")
    throw new HttpError(400, ErrorCode.invalidJson, "the body is empty; a JSON object is expected");
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new HttpError(
      400,
      ErrorCode.invalidJson,
      `the body is not valid JSON (${(error as Error).message})`,
    );
  }
};

const tooLarge = (maxBytes: number) =>
  new HttpError(413, ErrorCode.bodyTooLarge, `the body is larger than ${maxBytes} bytes`, {
    max_bytes: maxBytes,
  });

/** The body's bytes; stops reading (and cancels the stream) as soon as it passes `maxBytes`. */
const readAtMost = async (request: Request, maxBytes: number): Promise<Uint8Array> => {
  if (!request.body) return new Uint8Array();
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge(maxBytes);
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
};

// ---- field checks ----

type Fields = Readonly<Record<string, unknown>>;

const kind = (value: unknown): string =>
  value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;

const objectWith = (value: unknown, field: string, keys: readonly string[]): Fields => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw badRequest(field, `must be an object, not ${kind(value)}`);
  }
  for (const key of Object.keys(value)) {
    if (!keys.includes(key)) throw badRequest(field === "body" ? key : `${field}.${key}`, "unknown field");
  }
  return value as Fields;
};

const arrayOf = (value: unknown, field: string, min: number, max: number): readonly unknown[] => {
  if (!Array.isArray(value)) throw badRequest(field, `must be an array, not ${kind(value)}`);
  if (value.length < min || value.length > max) throw badRequest(field, `must have ${min}–${max} items`);
  return value;
};

const integerIn = (value: unknown, field: string, min: number, max: number): number => {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw badRequest(field, `must be an integer, not ${kind(value)}`);
  }
  if (value < min || value > max) throw badRequest(field, `must be between ${min} and ${max}`);
  return value;
};

const stringOf = (value: unknown, field: string, maxLength: number): string => {
  if (typeof value !== "string") throw badRequest(field, `must be a string, not ${kind(value)}`);
  if (value.length === 0 || value.length > maxLength)
    throw badRequest(field, `must have 1–${maxLength} characters`);
  return value;
};

// ---- the bodies ----

export const maxReceiptChars = 1024;
export const maxErrorMessageChars = 8192;

/**
 * An error message is kept to `maxErrorMessageChars`: a worker's 10 MB stack
 * dump is stored cut, with a note, rather than refused (the worker's answer
 * still counts) or passed on to the results and dead letters whole.
 */
const truncated = (message: string): string =>
  message.length <= maxErrorMessageChars
    ? message
    : `${message.slice(0, maxErrorMessageChars - 64)}… [truncated from ${message.length} characters]`;

export interface ReserveRequest {
  readonly batchSize: number;
}

export const parseReserve = (body: unknown, maxBatchSize: number): ReserveRequest => {
  const o = objectWith(body, "body", ["batch_size"]);
  if (!("batch_size" in o)) throw badRequest("batch_size", "is required");
  return { batchSize: integerIn(o.batch_size, "batch_size", 1, maxBatchSize) };
};

/** One answered task: a result, or an error that is permanent (counted failed) or not (retried). */
export type ResultItem =
  /** `json`: the result serialised, as it will be stored. */
  | { readonly receipt: string; readonly ok: true; readonly json: string }
  | { readonly receipt: string; readonly ok: false; readonly message: string; readonly permanent: boolean };

export const parseResults = (body: unknown, maxItems: number): ResultItem[] => {
  const o = objectWith(body, "body", ["results"]);
  return arrayOf(o.results, "results", 1, maxItems).map((raw, n): ResultItem => {
    const field = `results[${n}]`;
    const item = objectWith(raw, field, ["receipt", "result", "error"]);
    const receipt = stringOf(item.receipt, `${field}.receipt`, maxReceiptChars);
    const hasResult = "result" in item;
    const hasError = "error" in item;
    if (hasResult === hasError) throw badRequest(field, 'must have exactly one of "result" and "error"');
    if (hasResult) return { receipt, ok: true, json: serialise(item.result, `${field}.result`) };
    const error = objectWith(item.error, `${field}.error`, ["message", "permanent"]);
    const message = truncated(stringOf(error.message, `${field}.error.message`, Number.POSITIVE_INFINITY));
    const permanent = error.permanent ?? false;
    if (typeof permanent !== "boolean") {
      throw badRequest(`${field}.error.permanent`, `must be a boolean, not ${kind(permanent)}`);
    }
    return { receipt, ok: false, message, permanent };
  });
};

/** JSON.parse accepts nesting that JSON.stringify cannot write back (call stack): a 400, not a 500. */
const serialise = (value: unknown, field: string): string => {
  try {
    return JSON.stringify(value);
  } catch {
    throw badRequest(field, "cannot be stored (nested too deeply)");
  }
};

export const parseHeartbeat = (body: unknown, maxItems: number): string[] => {
  const o = objectWith(body, "body", ["receipts"]);
  return arrayOf(o.receipts, "receipts", 1, maxItems).map((r, n) =>
    stringOf(r, `receipts[${n}]`, maxReceiptChars),
  );
};
