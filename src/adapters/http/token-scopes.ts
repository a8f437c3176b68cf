import { Schema } from "effect";
import { InvalidArgument } from "../../kernel/errors.ts";
import { SubjectToken, WorkerIdentity } from "../../kernel/validation.ts";

/**
 * What a bearer token may do. `worker`: reserve, answer and heartbeat tasks
 * of jobs in its queues. `read`: list and show jobs of its queues (and look
 * at the dashboard). `operate`: what `read` may, and cancel jobs and redrive
 * their dead tasks from the dashboard.
 */
export type TokenRole = "worker" | "read" | "operate";

/** True if a token of role `held` may do what needs `needed`: `operate` includes `read`. */
export const roleGrants = (held: TokenRole, needed: TokenRole): boolean =>
  held === needed || (held === "operate" && needed === "read");

/** A token's configuration: the worker identity it names, its role and its queues (`"*"`: every queue). */
export interface TokenScopeOptions {
  readonly identity: string;
  readonly role: TokenRole;
  readonly queues: readonly string[] | "*";
}

/** A token given as just its identity (`{ token: "gpu-box-7" }`): a worker on every queue. */
export type TokenConfig = string | TokenScopeOptions;

export interface TokenScope {
  readonly identity: string;
  readonly role: TokenRole;
  /** True if the token may act on jobs of `queue`. */
  allows(queue: string): boolean;
  /** The queues it is limited to; undefined for every queue. */
  readonly queues: ReadonlySet<string> | undefined;
}

const isIdentity = Schema.is(WorkerIdentity);
const isQueue = Schema.is(SubjectToken);

const bad = (n: number, what: string): never => {
  throw new InvalidArgument({ message: `tokens: token #${n + 1}: ${what}`, field: "tokens" });
};

/** The scope of token #n from its configuration; `InvalidArgument` naming the token's position (never the token). */
export const parseScope = (config: unknown, n: number): TokenScope => {
  const o: Partial<TokenScopeOptions> =
    typeof config === "string" ? { identity: config, role: "worker", queues: "*" } : (config ?? {});
  if (typeof o !== "object" || Array.isArray(o)) bad(n, "must be an identity or { identity, role, queues }");
  for (const key of Object.keys(o)) {
    if (!["identity", "role", "queues"].includes(key)) bad(n, `${key}: unknown field`);
  }
  if (typeof o.identity !== "string" || !isIdentity(o.identity)) {
    bad(n, "the identity must be 1–128 of letters, digits and _ . @ : / -");
  }
  if (o.role !== "worker" && o.role !== "read" && o.role !== "operate")
    bad(n, 'role: must be "worker", "read" or "operate"');
  const queues = o.queues;
  if (queues !== "*" && !(Array.isArray(queues) && queues.length > 0 && queues.every((q) => isQueue(q)))) {
    bad(n, 'queues: must be "*" or a non-empty array of queue names');
  }
  const limited = queues === "*" ? undefined : new Set(queues as readonly string[]);
  return {
    identity: o.identity as string,
    role: o.role as TokenRole,
    queues: limited,
    allows: (queue) => limited === undefined || limited.has(queue),
  };
};
