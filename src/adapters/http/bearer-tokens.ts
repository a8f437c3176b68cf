import { createHash, timingSafeEqual } from "node:crypto";
import { Schema } from "effect";
import { InvalidArgument } from "../../kernel/errors.ts";
import { BearerToken } from "../../kernel/validation.ts";
import { parseScope, type TokenConfig, type TokenScope } from "./token-scopes.ts";

/** Shortest token accepted in the configuration: a guessable token is no lock. */
const minTokenLength = 16;

interface Entry {
  readonly digest: Buffer;
  readonly scope: TokenScope;
}

const digest = (text: string): Buffer => createHash("sha256").update(text).digest();

/**
 * Bearer tokens from configuration, each naming a worker identity. A
 * presented token is hashed and compared with every configured token's hash
 * with `timingSafeEqual`: equal lengths whatever the token, no early exit, so
 * the time taken says nothing about how close a guess was.
 */
export class BearerTokens {
  readonly #entries: readonly Entry[];

  constructor(tokens: Readonly<Record<string, TokenConfig>>) {
    if (typeof tokens !== "object" || tokens === null || Array.isArray(tokens)) {
      throw new InvalidArgument({
        message: "tokens: must be an object { token: identity or { identity, role, queues } }",
        field: "tokens",
      });
    }
    const entries = Object.entries(tokens);
    if (entries.length === 0) {
      throw new InvalidArgument({ message: "tokens: at least one token is needed", field: "tokens" });
    }
    this.#entries = entries.map(([token, identity], n) => {
      // Never echo the token: the message names its position only.
      if (!Schema.is(BearerToken)(token)) {
        throw new InvalidArgument({
          message: `tokens: token #${n + 1} must be ${minTokenLength}–1024 visible ASCII characters, no spaces (what an Authorization header can carry)`,
          field: "tokens",
        });
      }
      return { digest: digest(token), scope: parseScope(identity, n) };
    });
  }

  /** The identity and scope of the token in an `Authorization: Bearer …` header; undefined if none matches. */
  identify(token: string): TokenScope | undefined {
    const presented = digest(token);
    let found: TokenScope | undefined;
    for (const entry of this.#entries) {
      if (timingSafeEqual(presented, entry.digest) && found === undefined) found = entry.scope;
    }
    return found;
  }
}

/** The token of an `Authorization` header value, if it is the Bearer scheme (RFC 6750). */
export const bearerToken = (header: string | null | undefined): string | undefined => {
  const match = /^Bearer +([\x21-\x7e]+) *$/i.exec(header ?? "");
  return match?.[1];
};
