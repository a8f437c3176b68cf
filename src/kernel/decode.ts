import { Cause, Exit, Schema, SchemaAST, SchemaIssue } from "effect";

/**
 * Decoding with an Effect Schema, the way every input jetstate takes is
 * checked (options, HTTP bodies, records read back): the first issue becomes
 * the field it is about (`connection.backoff.initialMs`, `results[0].receipt`)
 * and a short message, for an `InvalidArgument`, a 400 or a read error.
 */

/** A decoded value, or the first thing wrong with it: the field (path included) and why. */
export type Decoded<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly field: string; readonly message: string };

/**
 * Decodes `value` with `shape`: objects are closed unless `open` (an unknown
 * key is named, with the known ones), and the first issue becomes a field and
 * a message.
 * `field` is where `value` sits (`connection`), the issue's path is appended
 * (`connection.backoff.initialMs`, `results[0].receipt`). The input is only
 * described by its kind, never printed: options carry credentials.
 */
export const decode = <T>(
  shape: Schema.Decoder<T>,
  value: unknown,
  field: string,
  options: DecodeOptions = {},
): Decoded<T> => {
  const onExcessProperty = options.open ? "ignore" : "error";
  const result = Schema.decodeUnknownExit(shape)(value, { onExcessProperty });
  if (Exit.isSuccess(result)) return { ok: true, value: result.value };
  // Again, keeping the inputs this time (it costs): the message names the kind of a wrong one.
  const failed = Schema.decodeUnknownExit(shape)(value, { onExcessProperty, reportInput: true });
  if (Exit.isSuccess(failed)) return { ok: true, value: failed.value };
  const error = Cause.squash(failed.cause);
  if (!Schema.isSchemaError(error)) throw error;
  const { path, leaf } = firstLeaf(error.issue, []);
  return { ok: false, field: path.reduce<string>(joinPath, field), message: describe(leaf, options) };
};

export interface DecodeOptions {
  /** Let unknown keys pass (and leave them out of the value): records a later writer may extend. */
  readonly open?: boolean;
  /** What an unknown key is called: `unknown option` (the default), `unknown field`. */
  readonly unknownKey?: string;
  /** Name the kind of a value of the wrong type (`expected number, got a string`). */
  readonly kind?: boolean;
}

const joinPath = (field: string, key: PropertyKey): string =>
  typeof key === "number" ? `${field}[${key}]` : field === "" ? String(key) : `${field}.${String(key)}`;

/** Errors stop at the first issue (the decoder's default): follow it down to its leaf. */
const firstLeaf = (
  issue: SchemaIssue.Issue,
  path: readonly PropertyKey[],
): { path: readonly PropertyKey[]; leaf: SchemaIssue.Issue } => {
  switch (issue._tag) {
    case "Pointer":
      return firstLeaf(issue.issue, [...path, ...issue.path]);
    case "Composite":
      return firstLeaf(issue.issues[0], path);
    case "Encoding":
      return firstLeaf(issue.issue, path);
    case "Filter":
      // A check on an object may place its issue on one of the object's fields.
      return issue.issue._tag === "Pointer" ? firstLeaf(issue.issue, path) : { path, leaf: issue };
    case "AnyOf": {
      const [first] = issue.issues;
      return first === undefined ? { path, leaf: issue } : firstLeaf(first, path);
    }
    default:
      return { path, leaf: issue };
  }
};

const describe = (issue: SchemaIssue.Issue, wording: DecodeOptions): string => {
  const got = wording.kind && SchemaIssue.hasInput(issue) ? `, got ${kindOf(issue.input)}` : "";
  switch (issue._tag) {
    case "MissingKey":
      return "is required";
    case "UnexpectedKey": {
      const known = SchemaAST.isObjects(issue.ast)
        ? issue.ast.propertySignatures.map((p) => String(p.name))
        : [];
      return `${wording.unknownKey ?? "unknown option"} (known: ${known.join(", ")})`;
    }
    case "InvalidType":
    case "AnyOf":
      return `expected ${expected(issue.ast)}${got}`;
    case "Filter": {
      const wanted = issue.filter.annotations?.expected;
      return (
        annotated(issue.filter.annotations) ??
        (typeof wanted === "string" ? `expected ${wanted}` : describe(issue.issue, wording))
      );
    }
    case "InvalidValue":
    case "Forbidden":
      return annotated(issue.annotations) ?? "is invalid";
    default:
      return "is invalid";
  }
};

const annotated = (annotations: { readonly message?: unknown } | undefined): string | undefined =>
  typeof annotations?.message === "string" ? annotations.message : undefined;

const expected = (ast: SchemaAST.AST): string => {
  switch (ast._tag) {
    case "String":
    case "Number":
    case "Boolean":
    case "Null":
      return ast._tag.toLowerCase();
    case "Objects":
      return "object";
    case "Arrays":
      return "array";
    case "Literal":
      return JSON.stringify(ast.literal);
    case "Union":
      // An optional field's `undefined` is no advice: name what it may be.
      return ast.types
        .filter((t) => t._tag !== "Undefined")
        .map(expected)
        .join(" | ");
    default:
      return "a valid value";
  }
};

const kindOf = (value: unknown): string =>
  value === null
    ? "null"
    : Array.isArray(value)
      ? "an array"
      : typeof value === "object"
        ? "an object"
        : typeof value === "undefined"
          ? "undefined"
          : `a ${typeof value}`;
