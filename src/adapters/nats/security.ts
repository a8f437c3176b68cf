/**
 * Who the runtime is to the NATS server, and whether the link is encrypted:
 * the `auth` and `tls` options, credentials in server URLs and the `NATS_*`
 * environment variables, resolved to one method before anything connects.
 *
 * Secrets live only in a `ConnectionSecurity` object, which prints and
 * serialises as `[redacted]`: resolved options can be logged, shown to an
 * inspector or put in an error without carrying a password along.
 */
import { accessSync, constants } from "node:fs";
import { inspect } from "node:util";
import { InvalidArgument } from "../../kernel/errors.ts";

/**
 * How the runtime authenticates to NATS. Give one method: `user` with `pass`,
 * `token`, `nkeyFile` or `credsFile`. When none is given here, credentials in
 * a server URL (`nats://user:pass@host`, `nats://token@host`) are used, then
 * the environment variables named below.
 *
 * @example
 * ```ts
 * await createRuntime({ servers: "tls://nats.internal:4222", auth: { credsFile: "/run/secrets/app.creds" } });
 * ```
 */
export interface AuthOptions {
  /**
   * User name, with `pass`.
   * @defaultValue `NATS_USER`, or the user of a `nats://user:pass@host` server URL
   */
  readonly user?: string;
  /**
   * Password of `user`.
   * @defaultValue `NATS_PASSWORD`, or the password of a `nats://user:pass@host` server URL
   */
  readonly pass?: string;
  /**
   * Authorization token.
   * @defaultValue `NATS_TOKEN`, or a `nats://token@host` server URL
   */
  readonly token?: string;
  /**
   * Path of a file holding an NKey user seed (`SU…`); read at every connect.
   * @defaultValue `NATS_NKEY`
   */
  readonly nkeyFile?: string;
  /**
   * Path of a `.creds` file (user JWT and NKey seed, decentralised auth); read
   * at every connect, so a rotated file is picked up on the next reconnect.
   * @defaultValue `NATS_CREDS`
   */
  readonly credsFile?: string;
}

/**
 * TLS for the NATS connection. `true`: TLS required, the server checked
 * against the system's CAs. Give `certFile` and `keyFile` for mutual TLS.
 *
 * @example
 * ```ts
 * await createRuntime({ servers: "tls://nats:4222", tls: { caFile: "ca.pem", certFile: "me.pem", keyFile: "me-key.pem" } });
 * ```
 */
export interface TlsOptions {
  /**
   * PEM file of the CA(s) that signed the server's certificate.
   * @defaultValue `NATS_CA`, else the system's CAs
   */
  readonly caFile?: string;
  /**
   * PEM file of this client's certificate (mutual TLS), with `keyFile`.
   * @defaultValue `NATS_CERT`
   */
  readonly certFile?: string;
  /**
   * PEM file of this client's private key (mutual TLS), with `certFile`.
   * @defaultValue `NATS_KEY`
   */
  readonly keyFile?: string;
}

export type AuthMethod = "none" | "user-password" | "token" | "nkey" | "creds";

type Secrets =
  | { readonly method: "none" }
  | { readonly method: "user-password"; readonly user: string; readonly pass: string }
  | { readonly method: "token"; readonly token: string }
  | { readonly method: "nkey"; readonly nkeyFile: string }
  | { readonly method: "creds"; readonly credsFile: string };

export interface ResolvedTls {
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

/** The resolved method and its secrets; prints as `[redacted]` everywhere. */
export class ConnectionSecurity {
  readonly #secrets: Secrets;
  readonly tls: ResolvedTls | undefined;

  constructor(secrets: Secrets, tls: ResolvedTls | undefined) {
    this.#secrets = secrets;
    this.tls = tls;
  }

  get method(): AuthMethod {
    return this.#secrets.method;
  }

  /** For the NATS client only: the one place the secrets are read. */
  reveal(): Secrets {
    return this.#secrets;
  }

  /** Safe to log: the method and whether TLS is on, never a secret. */
  describe(): { auth: AuthMethod; tls: boolean } {
    return { auth: this.#secrets.method, tls: this.tls !== undefined };
  }

  toJSON(): string {
    return "[redacted]";
  }

  [inspect.custom](): string {
    return `ConnectionSecurity { auth: ${this.#secrets.method}, tls: ${this.tls !== undefined} }`;
  }
}

const fail = (field: string, message: string): never => {
  throw new InvalidArgument({ message: `${field}: ${message}`, field });
};

const authKeys = ["user", "pass", "token", "nkeyFile", "credsFile"] as const;
const tlsKeys = ["caFile", "certFile", "keyFile"] as const;

/** `scheme://userinfo@rest` or `userinfo@rest`; userinfo ends at the last `@` before the path. */
const userInfoPattern = /^((?:[A-Za-z][A-Za-z0-9+.-]*:\/\/)?)([^/?#]*)@/;

/**
 * Takes credentials out of a server URL: nats.js does not read them from the
 * URL, and a URL with a password must never reach a log line or an error.
 * Anything that is not a string is returned as it is, for validation to reject.
 */
export const stripUserInfo = <T>(server: T): { server: T; user?: string; pass?: string } => {
  if (typeof server !== "string") return { server };
  const match = userInfoPattern.exec(server);
  const userInfo = match?.[2];
  if (!match || userInfo === undefined) return { server };
  const stripped = `${match[1]}${server.slice(match[0].length)}` as T;
  const colon = userInfo.indexOf(":");
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      // Not percent-encoded after all (a bare `%`): the text as written is the credential.
      return s;
    }
  };
  return colon < 0
    ? { server: stripped, user: decode(userInfo) }
    : { server: stripped, user: decode(userInfo.slice(0, colon)), pass: decode(userInfo.slice(colon + 1)) };
};

const text = (value: unknown, field: string): string | undefined => {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value === "") return fail(field, "must be a non-empty string");
  return value;
};

const readable = (file: string, field: string): string => {
  try {
    accessSync(file, constants.R_OK);
  } catch {
    return fail(field, `cannot read the file "${file}"`);
  }
  return file;
};

const env = (name: string): string | undefined => {
  const value = process.env[name];
  return value === undefined || value === "" ? undefined : value;
};

/** One method from one source: explicit options, else the URL, else the environment. */
const resolveSecrets = (
  auth: AuthOptions | undefined,
  fromUrl: { user?: string; pass?: string } | undefined,
): Secrets => {
  let source: Record<string, string | undefined>;
  let where: (key: (typeof authKeys)[number]) => string;
  if (auth !== undefined) {
    if (typeof auth !== "object" || auth === null) return fail("auth", "must be an object");
    for (const key of Object.keys(auth)) {
      if (!(authKeys as readonly string[]).includes(key))
        fail(`auth.${key}`, `unknown option (known: ${authKeys.join(", ")})`);
    }
    if (fromUrl !== undefined) fail("servers", "credentials are given both in a server URL and in auth");
    source = Object.fromEntries(authKeys.map((k) => [k, text(auth[k], `auth.${k}`)]));
    where = (key) => `auth.${key}`;
  } else if (fromUrl !== undefined) {
    // `nats://token@host`: a user with no password is a token, as in the NATS CLI.
    source =
      fromUrl.pass === undefined ? { token: fromUrl.user } : { user: fromUrl.user, pass: fromUrl.pass };
    where = (key) => `servers (${key} in the URL)`;
  } else {
    source = {
      user: env("NATS_USER"),
      pass: env("NATS_PASSWORD"),
      token: env("NATS_TOKEN"),
      nkeyFile: env("NATS_NKEY"),
      credsFile: env("NATS_CREDS"),
    };
    const names = { user: "NATS_USER", pass: "NATS_PASSWORD", token: "NATS_TOKEN", nkeyFile: "NATS_NKEY" };
    where = (key) => (key === "credsFile" ? "NATS_CREDS" : names[key]);
  }
  const methods = (["user", "token", "nkeyFile", "credsFile"] as const).filter(
    (key) => source[key] !== undefined || (key === "user" && source.pass !== undefined),
  );
  const [first, second] = methods;
  if (first !== undefined && second !== undefined) {
    fail(where(first), `give one way to authenticate, not ${methods.map((m) => where(m)).join(" and ")}`);
  }
  if (source.user !== undefined || source.pass !== undefined) {
    if (source.user === undefined || source.user === "")
      return fail(where("user"), "a password needs a user");
    if (source.pass === undefined || source.pass === "")
      return fail(where("pass"), "a user needs a password");
    return { method: "user-password", user: source.user, pass: source.pass };
  }
  if (source.token !== undefined) return { method: "token", token: source.token };
  if (source.nkeyFile !== undefined)
    return { method: "nkey", nkeyFile: readable(source.nkeyFile, where("nkeyFile")) };
  if (source.credsFile !== undefined)
    return { method: "creds", credsFile: readable(source.credsFile, where("credsFile")) };
  return { method: "none" };
};

const resolveTls = (tls: boolean | TlsOptions | undefined): ResolvedTls | undefined => {
  let raw: Record<string, string | undefined>;
  let where: (key: (typeof tlsKeys)[number]) => string;
  if (tls === false) return undefined;
  if (tls === undefined || tls === true) {
    raw = { caFile: env("NATS_CA"), certFile: env("NATS_CERT"), keyFile: env("NATS_KEY") };
    const names = { caFile: "NATS_CA", certFile: "NATS_CERT", keyFile: "NATS_KEY" };
    where = (key) => names[key];
    if (tls === undefined && Object.values(raw).every((v) => v === undefined)) return undefined;
  } else {
    if (typeof tls !== "object" || tls === null) return fail("tls", "must be a boolean or an object");
    for (const key of Object.keys(tls)) {
      if (!(tlsKeys as readonly string[]).includes(key))
        fail(`tls.${key}`, `unknown option (known: ${tlsKeys.join(", ")})`);
    }
    raw = Object.fromEntries(tlsKeys.map((k) => [k, text(tls[k], `tls.${k}`)]));
    where = (key) => `tls.${key}`;
  }
  if ((raw.certFile === undefined) !== (raw.keyFile === undefined)) {
    fail(
      where(raw.certFile === undefined ? "certFile" : "keyFile"),
      "mutual TLS needs both certFile and keyFile",
    );
  }
  return {
    ...(raw.caFile !== undefined ? { caFile: readable(raw.caFile, where("caFile")) } : {}),
    ...(raw.certFile !== undefined ? { certFile: readable(raw.certFile, where("certFile")) } : {}),
    ...(raw.keyFile !== undefined ? { keyFile: readable(raw.keyFile, where("keyFile")) } : {}),
  };
};

/**
 * Validates `auth` and `tls` (throws `InvalidArgument` naming the field, never
 * the secret) and picks the credentials found in the server URLs, which must
 * all agree.
 */
export const resolveSecurity = (
  auth: AuthOptions | undefined,
  tls: boolean | TlsOptions | undefined,
  urlCredentials: readonly { user?: string; pass?: string }[],
): ConnectionSecurity => {
  const withCredentials = urlCredentials.filter((c) => c.user !== undefined);
  const first = withCredentials[0];
  if (first !== undefined) {
    if (withCredentials.some((c) => c.user !== first.user || c.pass !== first.pass))
      fail("servers", "the server URLs carry different credentials");
  }
  return new ConnectionSecurity(resolveSecrets(auth, first), resolveTls(tls));
};
