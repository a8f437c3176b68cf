import { InvalidArgument } from "./errors.ts";
import { check, SubjectToken } from "./validation.ts";

/**
 * A queue defined once, so the task and result types flow from `submit` to
 * the handler to `results()`. A schema is any Standard Schema (zod, valibot,
 * Effect Schema, arktype…) or a plain function that returns the value or
 * throws.
 */

interface StandardSchemaIssue {
  readonly message: string;
  readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }>;
}
export interface StandardSchema<T> {
  readonly "~standard": {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (
      value: unknown,
    ) =>
      | { readonly value: T; readonly issues?: undefined }
      | { readonly issues: ReadonlyArray<StandardSchemaIssue> }
      | Promise<
          | { readonly value: T; readonly issues?: undefined }
          | { readonly issues: ReadonlyArray<StandardSchemaIssue> }
        >;
  };
}
export type Schema<T> = StandardSchema<T> | ((value: unknown) => T);

export interface Queue<Task, Result> {
  readonly name: string;
  readonly schema?: { readonly task?: Schema<Task>; readonly result?: Schema<Result> };
  /** Type-only markers: never set at run time. */
  readonly __task?: Task;
  readonly __result?: Result;
}

/** Queue names and job ids become subject tokens: no `.`, `*`, `>` or whitespace, and short. */
export const assertToken = (value: unknown, field: string): string => check(SubjectToken, value, field);

export const defineQueue = <Task, Result = unknown>(
  name: string,
  options: { schema?: Queue<Task, Result>["schema"] } = {},
): Queue<Task, Result> => {
  assertToken(name, "queue");
  return options.schema ? { name, schema: options.schema } : { name };
};

const pathText = (path: StandardSchemaIssue["path"]): string =>
  (path ?? [])
    .map((p) => (typeof p === "object" && p !== null ? p.key : p))
    .map((k) => (typeof k === "number" ? `[${k}]` : `.${String(k)}`))
    .join("");

/** Validates one value; the error names `where` (e.g. `tasks[3]`) and the field inside it. */
export const validateWith = async <T>(schema: Schema<T>, value: unknown, where: string): Promise<T> => {
  if (typeof schema === "function") {
    try {
      return schema(value);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new InvalidArgument({ message: `${where}: ${message}`, field: where });
    }
  }
  const result = await schema["~standard"].validate(value);
  if (result.issues) {
    const first = result.issues[0];
    const field = `${where}${pathText(first?.path)}`;
    const more = result.issues.length > 1 ? ` (and ${result.issues.length - 1} more)` : "";
    throw new InvalidArgument({ message: `${field}: ${first?.message ?? "invalid"}${more}`, field });
  }
  return result.value;
};
