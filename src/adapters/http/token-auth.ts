import type { Context } from "hono";
import { type BearerTokens, bearerToken } from "./bearer-tokens.ts";
import { ErrorCode, HttpError } from "./http-errors.ts";
import { roleGrants, type TokenRole, type TokenScope } from "./token-scopes.ts";

/** A Hono app whose authenticated routes carry the caller's token scope. */
export type ScopedEnv = { Variables: { scope: TokenScope } };

/** Middleware: a valid `Authorization: Bearer <token>` (401 otherwise); its scope goes on the context. */
export const authenticateWith =
  (tokens: BearerTokens) =>
  async (c: Context<ScopedEnv>, next: () => Promise<void>): Promise<void> => {
    const header = c.req.header("authorization");
    if (header === undefined)
      throw new HttpError(401, ErrorCode.missingToken, "an Authorization: Bearer token is required");
    const token = bearerToken(header);
    const scope = token === undefined ? undefined : tokens.identify(token);
    if (scope === undefined)
      throw new HttpError(401, ErrorCode.invalidToken, "the bearer token is not valid");
    c.set("scope", scope);
    await next();
  };

/** The caller's token must have `role` (or one that includes it: `operate` reads): 403 otherwise. */
export const callerWith = (c: Context<ScopedEnv>, role: TokenRole): TokenScope => {
  const scope = c.get("scope");
  if (!roleGrants(scope.role, role))
    throw new HttpError(403, ErrorCode.forbidden, `this token's role is ${scope.role}; this needs ${role}`);
  return scope;
};
