/**
 * The `auth` and `tls` options, credentials in server URLs and the `NATS_*`
 * variables, resolved before anything connects. The oracle for "no leak" is
 * the text of every error and of the resolved options, printed and as JSON,
 * searched for the secret.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { inspect } from "node:util";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { stripUserInfo } from "../../src/adapters/nats/security.ts";
import { type RuntimeOptions, resolveOptions } from "../../src/api/options.ts";
import { InvalidArgument } from "../../src/kernel/errors.ts";

const secret = "hunter2-Secret";
const dir = mkdtempSync(path.join(tmpdir(), "jetstate-security-"));
const seedFile = path.join(dir, "user.nk");
writeFileSync(seedFile, "SUAEXAMPLE\n");
const names = [
  "NATS_URL",
  "NATS_USER",
  "NATS_PASSWORD",
  "NATS_TOKEN",
  "NATS_NKEY",
  "NATS_CREDS",
  "NATS_CA",
  "NATS_CERT",
  "NATS_KEY",
];
const saved = Object.fromEntries(names.map((n) => [n, process.env[n]]));

afterEach(() => {
  for (const n of names) {
    if (saved[n] === undefined) delete process.env[n];
    else process.env[n] = saved[n];
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const refusal = (options: RuntimeOptions) => {
  try {
    resolveOptions(options);
  } catch (error) {
    return error as InvalidArgument;
  }
  throw new Error("expected an InvalidArgument");
};

describe("credentials in a server URL", () => {
  it.each([
    ["nats://alice:pw@h:4222", "nats://h:4222", { user: "alice", pass: "pw" }],
    ["alice:pw@h:4222", "h:4222", { user: "alice", pass: "pw" }],
    ["tls://tok@h:4222", "tls://h:4222", { user: "tok" }],
    ["nats://a%40b:p%3Aw%2F@h", "nats://h", { user: "a@b", pass: "p:w/" }],
    ["nats://u:p@ss@h:1", "nats://h:1", { user: "u", pass: "p@ss" }],
    ["nats://h:4222", "nats://h:4222", {}],
  ])("%s → %s", (url, server, credentials) => {
    expect(stripUserInfo(url)).toEqual({ server, ...credentials });
  });

  it("are taken out of the servers and become the auth method", () => {
    const resolved = resolveOptions({ servers: [`nats://alice:${secret}@h1:4222`, `h2:4222`] });
    expect(resolved.servers).toEqual(["nats://h1:4222", "h2:4222"]);
    expect(resolved.security.method).toBe("user-password");
    expect(resolved.security.reveal()).toEqual({ method: "user-password", user: "alice", pass: secret });
    expect(resolveOptions({ servers: `nats://${secret}@h` }).security.reveal()).toEqual({
      method: "token",
      token: secret,
    });
  });

  it("never reach an error message: a bad port next to a password", () => {
    const error = refusal({ servers: `nats://alice:${secret}@h:99999` });
    expect(error).toBeInstanceOf(InvalidArgument);
    expect(error.field).toBe("servers[0]");
    expect(`${error.message} ${inspect(error)} ${JSON.stringify(error)}`).not.toContain(secret);
  });

  it("differing credentials in two URLs, or in a URL and in auth, are refused", () => {
    expect(refusal({ servers: ["nats://a:x@h1", "nats://a:y@h2"] }).field).toBe("servers");
    const both = refusal({ servers: `nats://a:${secret}@h`, auth: { token: secret } });
    expect(both.field).toBe("servers");
    expect(both.message).not.toContain(secret);
  });
});

describe("the auth option and the environment", () => {
  it("the resolved options print and serialise without the secret", () => {
    const resolved = resolveOptions({ servers: "h", auth: { user: "alice", pass: secret } });
    expect(JSON.stringify(resolved)).not.toContain(secret);
    expect(inspect(resolved, { depth: 10 })).not.toContain(secret);
    expect(resolved.security.describe()).toEqual({ auth: "user-password", tls: false });
  });

  it("NATS_* variables are used when neither auth nor the URL has credentials; auth wins over them", () => {
    process.env.NATS_TOKEN = secret;
    expect(resolveOptions({ servers: "h" }).security.reveal()).toEqual({ method: "token", token: secret });
    expect(resolveOptions({ servers: "h", auth: { nkeyFile: seedFile } }).security.reveal()).toEqual({
      method: "nkey",
      nkeyFile: seedFile,
    });
    delete process.env.NATS_TOKEN;
    Object.assign(process.env, { NATS_USER: "bob", NATS_PASSWORD: secret });
    expect(resolveOptions({ servers: "h" }).security.reveal()).toEqual({
      method: "user-password",
      user: "bob",
      pass: secret,
    });
  });

  it.each([
    ["two methods", "auth.user", { auth: { token: secret, user: "a", pass: secret } }],
    ["a user without a password", "auth.pass", { auth: { user: "a" } }],
    ["a password without a user", "auth.user", { auth: { pass: secret } }],
    ["an unknown key", "auth.password", { auth: { password: secret } as never }],
    ["an empty token", "auth.token", { auth: { token: "" } }],
    ["an unreadable seed file", "auth.nkeyFile", { auth: { nkeyFile: path.join(dir, "missing.nk") } }],
    ["an unreadable creds file", "auth.credsFile", { auth: { credsFile: path.join(dir, "missing.creds") } }],
    ["a client certificate without its key", "tls.keyFile", { tls: { certFile: seedFile } }],
    ["an unreadable CA file", "tls.caFile", { tls: { caFile: path.join(dir, "missing.pem") } }],
    ["tls not an object", "tls", { tls: "yes" as never }],
  ])("%s: an InvalidArgument naming %s, without the secret", (_name, field, options) => {
    const error = refusal({ servers: "h", ...(options as RuntimeOptions) });
    expect(error).toBeInstanceOf(InvalidArgument);
    expect(error.field).toBe(field);
    expect(error.message).not.toContain(secret);
  });

  it("two methods from the environment name the variables", () => {
    Object.assign(process.env, { NATS_TOKEN: secret, NATS_CREDS: seedFile });
    const error = refusal({ servers: "h" });
    expect(error.message).toMatch(/NATS_TOKEN and NATS_CREDS/);
    expect(error.message).not.toContain(secret);
  });

  it("TLS: off by default, on with true, and from NATS_CA/NATS_CERT/NATS_KEY", () => {
    expect(resolveOptions({ servers: "h" }).security.tls).toBeUndefined();
    expect(resolveOptions({ servers: "h", tls: true }).security.tls).toEqual({});
    Object.assign(process.env, { NATS_CA: seedFile, NATS_CERT: seedFile, NATS_KEY: seedFile });
    expect(resolveOptions({ servers: "h" }).security.tls).toEqual({
      caFile: seedFile,
      certFile: seedFile,
      keyFile: seedFile,
    });
    expect(resolveOptions({ servers: "h", tls: false }).security.tls).toBeUndefined();
  });
});
