import { MalformedMessage } from "./errors.ts";

/** What the readers of every message format share: JSON parsed into `MalformedMessage`, checks of its fields. */

export const reason = (error: unknown) => (error instanceof Error ? error.message : String(error));

/** The start of a body, for an error message: bodies can be megabytes. */
export const excerpt = (body: string) => (body.length > 80 ? `${body.slice(0, 80)}…` : body);

export const parse = (body: string, format: MalformedMessage["format"]): unknown => {
  try {
    return JSON.parse(body);
  } catch (error) {
    throw new MalformedMessage({ format, message: `${format} message is not JSON (${reason(error)})` });
  }
};

export const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

export const isIndex = (value: unknown): value is number =>
  Number.isSafeInteger(value) && (value as number) >= 0;
