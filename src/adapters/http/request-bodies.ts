import type { Schema } from "effect";
import { decode } from "../../kernel/decode.ts";
import { requestBodies } from "./bodies.ts";
import { badRequest, ErrorCode, HttpError } from "./http-errors.ts";

/**
 * Reading and checking request bodies: bounded in bytes (the declared
 * Content-Length and the bytes actually read), parsed as JSON, then decoded
 * with the schemas of bodies.ts (the ones the OpenAPI document shows) so a
 * 400 names the field.
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
      // The body is refused either way; a cancel that fails leaves nothing of ours open.
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

// ---- the bodies ----

/** The body decoded with `shape`; else a 400 naming the field (`body` for the body itself). */
export const decodeBody = <T>(shape: Schema.Decoder<T>, body: unknown): T => {
  const decoded = decode(shape, body, "", { unknownKey: "unknown field", kind: true });
  if (decoded.ok) return decoded.value;
  throw badRequest(decoded.field || "body", decoded.message);
};

/** A schema built for the last limit asked for: a service has one configuration. */
const forLimit = <T>(make: (limit: number) => T): ((limit: number) => T) => {
  let last: { limit: number; schema: T } | undefined;
  return (limit) => {
    if (last?.limit !== limit) last = { limit, schema: make(limit) };
    return last.schema;
  };
};
const reserveShape = forLimit(
  (maxBatchSize) => requestBodies({ maxBatchSize, maxResults: 1 }).ReserveRequest,
);
const resultsShape = forLimit((maxResults) => requestBodies({ maxBatchSize: 1, maxResults }).ResultsRequest);
const heartbeatShape = forLimit(
  (maxResults) => requestBodies({ maxBatchSize: 1, maxResults }).HeartbeatRequest,
);

const maxErrorMessageChars = 8192;

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
  return { batchSize: decodeBody(reserveShape(maxBatchSize), body).batch_size };
};

/** One answered task: a result, or an error that is permanent (counted failed) or not (retried). */
export type ResultItem =
  /** `json`: the result serialised, as it will be stored. */
  | { readonly receipt: string; readonly ok: true; readonly json: string }
  | { readonly receipt: string; readonly ok: false; readonly message: string; readonly permanent: boolean };

export const parseResults = (body: unknown, maxItems: number): ResultItem[] => {
  return decodeBody(resultsShape(maxItems), body).results.map(({ receipt, result, error }, n): ResultItem => {
    if (error === undefined) return { receipt, ok: true, json: serialise(result, `results[${n}].result`) };
    return { receipt, ok: false, message: truncated(error.message), permanent: error.permanent ?? false };
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
  return [...decodeBody(heartbeatShape(maxItems), body).receipts];
};
