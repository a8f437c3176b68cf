/**
 * Server configurations for the authentication and TLS tests: a config file
 * per method (users, token, NKey users, operator/account JWTs), certificates
 * made with the `openssl` CLI, and the client-side files (seed, creds) to go
 * with them. Everything lives in a temporary directory the caller removes.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  createAccount,
  createOperator,
  createUser,
  encodeAccount,
  encodeOperator,
  encodeUser,
  fmtCreds,
} from "@nats-io/jwt";
import { createUser as createNKeyUser } from "@nats-io/nkeys";
import { natsPermissions, type PermissionsRequest } from "../../src/api/permissions.ts";

export interface AuthFiles {
  readonly dir: string;
  file(name: string, content: string | Uint8Array): Promise<string>;
  remove(): Promise<void>;
}

export const authFiles = async (): Promise<AuthFiles> => {
  const dir = await mkdtemp(path.join(tmpdir(), "jetstate-auth-"));
  return {
    dir,
    async file(name, content) {
      const file = path.join(dir, name);
      await writeFile(file, content, { mode: 0o600 });
      return file;
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
};

/** A config string is JSON-compatible: quoting every value keeps odd secrets intact. */
const q = (value: string): string => JSON.stringify(value);

export const userPasswordConfig = (user: string, password: string): string =>
  `authorization { user: ${q(user)}, password: ${q(password)} }\n`;

/**
 * A server config (logging to `logFile`) whose users each have the NATS
 * permissions `natsPermissions()` gives their request, all with `password`;
 * `extraUsers`: further user entries as they go in the config.
 */
export const roleUsersConfig = (
  logFile: string,
  password: string,
  users: Readonly<Record<string, PermissionsRequest>>,
  extraUsers: readonly string[] = [],
): string =>
  [
    `log_file: ${JSON.stringify(logFile)}`,
    "authorization {",
    "  users: [",
    ...Object.entries(users).map(
      ([user, request]) =>
        `    { user: ${JSON.stringify(user)}, password: ${JSON.stringify(password)}, permissions: ${JSON.stringify(natsPermissions(request))} }`,
    ),
    ...extraUsers.map((entry) => `    ${entry}`),
    "  ]",
    "}",
    "",
  ].join("\n");

/** Permission violations as the server logged them in `logFile`: `{ user, subject }` (the server's words, not jetstate's). */
export const loggedViolations = async (
  logFile: string,
): Promise<Array<{ user: string; subject: string }>> => {
  const log = await readFile(logFile, "utf8").catch(() => "");
  return [...log.matchAll(/Violation - User "([^"]+)", Subject "([^"]+)"/g)].map(([, user, subject]) => ({
    user: user ?? "",
    subject: subject ?? "",
  }));
};

export const tokenConfig = (token: string): string => `authorization { token: ${q(token)} }\n`;

/** A new NKey user: the server config naming its public key, and its seed for the client. */
export const nkeyUser = (): { config: string; seed: string } => {
  const kp = createNKeyUser();
  const pub = kp.getPublicKey();
  return {
    config: `authorization { users: [ { nkey: ${q(pub)} } ] }\n`,
    seed: new TextDecoder().decode(kp.getSeed()),
  };
};

/**
 * Decentralised auth: an operator, a system account and an application account
 * with JetStream enabled (preloaded in a memory resolver), and a user's creds.
 */
export const operatorSetup = async (): Promise<{ config: string; creds: Uint8Array; userSeed: string }> => {
  const operator = createOperator();
  const system = createAccount();
  const account = createAccount();
  const user = createUser();
  const operatorJwt = await encodeOperator("jetstate-test", operator, {
    system_account: system.getPublicKey(),
  });
  const systemJwt = await encodeAccount("SYS", system, {}, { signer: operator });
  const accountJwt = await encodeAccount(
    "APP",
    account,
    {
      // Unset limits are 0 (nothing allowed): open every one, JetStream included.
      limits: {
        subs: -1,
        data: -1,
        payload: -1,
        imports: -1,
        exports: -1,
        wildcards: true,
        conn: -1,
        leaf: -1,
        mem_storage: -1,
        disk_storage: -1,
        streams: -1,
        consumer: -1,
      },
    },
    { signer: operator },
  );
  const userJwt = await encodeUser("app", user, account);
  const config = [
    `operator: ${q(operatorJwt)}`,
    `system_account: ${q(system.getPublicKey())}`,
    "resolver: MEMORY",
    "resolver_preload: {",
    `  ${q(system.getPublicKey())}: ${q(systemJwt)}`,
    `  ${q(account.getPublicKey())}: ${q(accountJwt)}`,
    "}",
    "",
  ].join("\n");
  return { config, creds: fmtCreds(userJwt, user), userSeed: new TextDecoder().decode(user.getSeed()) };
};

export interface Certificates {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

/** True when the `openssl` CLI runs here (the TLS tests need it to make certificates). */
export const hasOpenssl = (): boolean => {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
};

/** A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA. */
export const makeCertificates = async (files: AuthFiles): Promise<Certificates> => {
  const at = (name: string) => path.join(files.dir, name);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: files.dir, stdio: "pipe" });
  const key = (name: string) =>
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", at(name));
  key("ca-key.pem");
  openssl(
    "req",
    "-x509",
    "-new",
    "-key",
    at("ca-key.pem"),
    "-subj",
    "/CN=jetstate test CA",
    "-days",
    "2",
    "-out",
    at("ca.pem"),
  );
  const leaf = (name: string, cn: string, ext: string) => {
    key(`${name}-key.pem`);
    openssl("req", "-new", "-key", at(`${name}-key.pem`), "-subj", `/CN=${cn}`, "-out", at(`${name}.csr`));
    execFileSync("sh", ["-c", `printf '%s\\n' "${ext}" > ${name}.ext`], { cwd: files.dir });
    openssl(
      "x509",
      "-req",
      "-in",
      at(`${name}.csr`),
      "-CA",
      at("ca.pem"),
      "-CAkey",
      at("ca-key.pem"),
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      at(`${name}.ext`),
      "-out",
      at(`${name}.pem`),
    );
  };
  leaf("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth");
  leaf("client", "jetstate client", "extendedKeyUsage=clientAuth");
  return {
    ca: at("ca.pem"),
    serverCert: at("server.pem"),
    serverKey: at("server-key.pem"),
    clientCert: at("client.pem"),
    clientKey: at("client-key.pem"),
  };
};

/** `verify: true` makes the server ask for, and check, a client certificate (mutual TLS). */
export const tlsConfig = (certs: Certificates, { verify }: { verify: boolean }): string =>
  `tls { cert_file: ${q(certs.serverCert)}, key_file: ${q(certs.serverKey)}, ca_file: ${q(certs.ca)}, verify: ${verify} }\n`;
