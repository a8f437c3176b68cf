import { randomBytes } from "node:crypto";
import { inspect as utilInspect } from "node:util";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { InspectionEvent } from "xstate";
import { createRuntime, type Runtime, type RuntimeOptions } from "../../src/index.ts";
import {
  type AuthFiles,
  authFiles,
  type Certificates,
  hasOpenssl,
  makeCertificates,
  nkeyUser,
  operatorSetup,
  tlsConfig,
  tokenConfig,
  userPasswordConfig,
} from "../harness/nats-auth.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

/**
 * Authenticated and encrypted connections (issue #17 item 3), each against a
 * nats-server of its own started with a config file for that method. The
 * oracle for "it works" is what the worker's handler saw; for "no secret
 * leaks", every line pino wrote, every inspection event and every error the
 * caller got, searched for the secret as written and as URL-encoded.
 */

/** Secrets with characters a URL must encode, so a half-redacted URL is caught too. */
const newSecret = () => `s3cr:t@${randomBytes(6).toString("hex")}/%`;

interface Captured {
  readonly logs: string[];
  readonly events: InspectionEvent[];
  readonly errors: unknown[];
}

const capture = (): Captured & Pick<RuntimeOptions, "logger" | "inspect"> => {
  const logs: string[] = [];
  const events: InspectionEvent[] = [];
  return {
    logs,
    events,
    errors: [],
    logger: pino({ level: "trace" }, { write: (line: string) => logs.push(line) }),
    inspect: { inspect: (event) => events.push(event) },
  };
};

/** Everything captured as text: JSON of logs and events (cycles cut), and errors as printed. */
const everything = (c: Captured): string => {
  const seen = new WeakSet<object>();
  const json = JSON.stringify(
    c.events.map((e) => ({
      type: e.type,
      event: (e as { event?: unknown }).event,
      snapshot: (e as { snapshot?: unknown }).snapshot,
    })),
    (_key, value: unknown) => {
      if (typeof value === "object" && value !== null) {
        if (seen.has(value)) return "[cycle]";
        seen.add(value);
      }
      return value;
    },
  );
  const errors = c.errors.map((e) => `${String(e)}\n${utilInspect(e, { depth: 8 })}\n${JSON.stringify(e)}`);
  return [...c.logs, json, ...errors].join("\n");
};

const expectNoSecret = (c: Captured, ...secrets: string[]) => {
  const text = everything(c);
  expect(c.logs.length).toBeGreaterThan(0);
  for (const secret of secrets) {
    expect(text).not.toContain(secret);
    expect(text).not.toContain(encodeURIComponent(secret));
  }
};

/** Runs a job of three tasks; returns what the handler saw and the final status. */
const runJob = async (rt: Runtime, queue: string) => {
  const seen: number[] = [];
  const worker = rt.workers.start<number, number>({
    queue,
    handler: async (task) => {
      seen.push(task.payload);
      return task.payload * 10;
    },
  });
  try {
    const job = await rt.jobs.submit({ queue, tasks: [1, 2, 3] });
    const final = await job.done();
    return { status: final.status, seen: seen.sort() };
  } finally {
    await worker.stop();
  }
};

describe("authenticated connections: each method against its own server", () => {
  let files: AuthFiles;
  let server: NatsServerHandle | undefined;
  let rt: Runtime | undefined;
  const savedEnv = { ...process.env };

  beforeAll(async () => {
    files = await authFiles();
  });
  afterEach(async () => {
    await rt?.stop();
    rt = undefined;
    await server?.dispose();
    server = undefined;
    process.env = { ...savedEnv };
  });
  afterAll(async () => {
    await files?.remove();
  });

  const serverWith = async (name: string, config: string) => {
    const file = await files.file(`${name}.conf`, config);
    server = await startNatsServer({ args: ["-c", file] });
    return server;
  };

  it("user and password as options: the job runs, and a wrong password is refused without leaking either", async () => {
    const password = newSecret();
    const wrong = newSecret();
    const s = await serverWith("userpass", userPasswordConfig("alice", password));

    const bad = capture();
    const refused = await createRuntime({
      servers: s.url,
      auth: { user: "alice", pass: wrong },
      connection: { operationTimeoutMs: 1500, backoff: { initialMs: 50, maxMs: 200 } },
      logger: bad.logger,
      inspect: bad.inspect,
    });
    await waitUntil(() => (refused.connection.snapshot().lastError ?? "").length > 0, {
      timeoutMs: 10_000,
      message: "the refused connection to report its error",
    });
    expect(refused.connection.snapshot().lastError).toMatch(/authoriz/i);
    const error = await refused.jobs.submit({ queue: "q", tasks: [1] }).catch((e: unknown) => e);
    expect((error as { _tag?: string })._tag).toBe("ConnectionUnavailable");
    bad.errors.push(error, refused.connection.snapshot());
    await refused.stop();
    expectNoSecret(bad, wrong, password);

    const good = capture();
    rt = await createRuntime({
      servers: s.url,
      auth: { user: "alice", pass: password },
      logger: good.logger,
      inspect: good.inspect,
    });
    expect(await runJob(rt, "userpass")).toEqual({ status: "succeeded", seen: [1, 2, 3] });
    good.errors.push(rt.connection.snapshot());
    await rt.stop();
    rt = undefined;
    expectNoSecret(good, password);
  });

  it("user and password in the server URL: taken out of the URL, used, never logged", async () => {
    const password = newSecret();
    const s = await serverWith("url", userPasswordConfig("bob", password));
    const url = s.url.replace("nats://", `nats://bob:${encodeURIComponent(password)}@`);
    const c = capture();
    rt = await createRuntime({
      servers: url,
      connection: { operationTimeoutMs: 3000 },
      logger: c.logger,
      inspect: c.inspect,
    });
    const outcome = await runJob(rt, "url").catch((error: unknown) => error);
    c.errors.push(outcome);
    await rt.stop();
    rt = undefined;
    // Secrets first: a leak is the worse failure, and it shows even when the job fails too.
    expectNoSecret(c, password);
    expect(outcome).toEqual({ status: "succeeded", seen: [1, 2, 3] });
    // The start line names the server without its credentials, and the method.
    const start = c.logs
      .map((l) => JSON.parse(l) as { msg: string; servers?: string[]; auth?: string })
      .find((l) => l.msg === "jetstate on NATS");
    expect(start).toMatchObject({ servers: [s.url], auth: "user-password" });
  });

  it("NATS_URL with credentials and no options: the environment alone is enough", async () => {
    const password = newSecret();
    const s = await serverWith("envurl", userPasswordConfig("carol", password));
    process.env.NATS_URL = s.url.replace("nats://", `nats://carol:${encodeURIComponent(password)}@`);
    const c = capture();
    rt = await createRuntime({ logger: c.logger, inspect: c.inspect });
    expect(await runJob(rt, "envurl")).toEqual({ status: "succeeded", seen: [1, 2, 3] });
    await rt.stop();
    rt = undefined;
    expectNoSecret(c, password);
  });

  it("token from NATS_TOKEN", async () => {
    const token = newSecret();
    const s = await serverWith("token", tokenConfig(token));
    process.env.NATS_TOKEN = token;
    const c = capture();
    rt = await createRuntime({ servers: s.url, logger: c.logger, inspect: c.inspect });
    expect(await runJob(rt, "token")).toEqual({ status: "succeeded", seen: [1, 2, 3] });
    await rt.stop();
    rt = undefined;
    expectNoSecret(c, token);
  });

  it("NKey seed file (option), and NATS_NKEY", async () => {
    const user = nkeyUser();
    const seedFile = await files.file("user.nk", `${user.seed}\n`);
    const s = await serverWith("nkey", user.config);
    const c = capture();
    rt = await createRuntime({
      servers: s.url,
      auth: { nkeyFile: seedFile },
      logger: c.logger,
      inspect: c.inspect,
    });
    expect(await runJob(rt, "nkey")).toEqual({ status: "succeeded", seen: [1, 2, 3] });
    await rt.stop();
    process.env.NATS_NKEY = seedFile;
    rt = await createRuntime({ servers: s.url, logger: c.logger, inspect: c.inspect });
    expect(await runJob(rt, "nkey-env")).toEqual({ status: "succeeded", seen: [1, 2, 3] });
    await rt.stop();
    rt = undefined;
    expectNoSecret(c, user.seed);
  });

  it(".creds file (operator, account and user JWTs) from NATS_CREDS", async () => {
    const setup = await operatorSetup();
    const credsFile = await files.file("user.creds", setup.creds);
    const s = await serverWith("creds", setup.config);
    process.env.NATS_CREDS = credsFile;
    const c = capture();
    rt = await createRuntime({ servers: s.url, logger: c.logger, inspect: c.inspect });
    expect(await runJob(rt, "creds")).toEqual({ status: "succeeded", seen: [1, 2, 3] });
    await rt.stop();
    rt = undefined;
    expectNoSecret(c, setup.userSeed);
  });
});

// The certificates are made with the openssl CLI (.ci/run installs it): without it this fails, never skips.
describe("encrypted connections: TLS and mutual TLS", () => {
  it("the openssl CLI is here to make the certificates", () => {
    expect(hasOpenssl()).toBe(true);
  });
  let files: AuthFiles;
  let certs: Certificates;
  let server: NatsServerHandle | undefined;
  let rt: Runtime | undefined;
  const savedEnv = { ...process.env };

  beforeAll(async () => {
    files = await authFiles();
    certs = await makeCertificates(files);
  });
  afterEach(async () => {
    await rt?.stop();
    rt = undefined;
    await server?.dispose();
    server = undefined;
    process.env = { ...savedEnv };
  });
  afterAll(async () => {
    await files?.remove();
  });

  it("TLS with the test CA (option): the job runs", async () => {
    server = await startNatsServer({
      args: ["-c", await files.file("tls.conf", tlsConfig(certs, { verify: false }))],
    });
    const c = capture();
    rt = await createRuntime({ servers: server.url, tls: { caFile: certs.ca }, logger: c.logger });
    expect(await runJob(rt, "tls")).toEqual({ status: "succeeded", seen: [1, 2, 3] });
  });

  it("mutual TLS with user and password from NATS_CA/NATS_CERT/NATS_KEY and NATS_USER/NATS_PASSWORD; without a client certificate it is refused", async () => {
    const password = newSecret();
    const config = tlsConfig(certs, { verify: true }) + userPasswordConfig("dave", password);
    server = await startNatsServer({ args: ["-c", await files.file("mtls.conf", config)] });

    const refusedLog = capture();
    const refused = await createRuntime({
      servers: server.url,
      tls: { caFile: certs.ca },
      auth: { user: "dave", pass: password },
      connection: { connectTimeoutMs: 1000 },
      logger: refusedLog.logger,
    });
    await waitUntil(() => (refused.connection.snapshot().lastError ?? "").length > 0, {
      timeoutMs: 10_000,
      message: "the connection without a client certificate to fail",
    });
    await refused.stop();
    expectNoSecret(refusedLog, password);

    Object.assign(process.env, {
      NATS_CA: certs.ca,
      NATS_CERT: certs.clientCert,
      NATS_KEY: certs.clientKey,
      NATS_USER: "dave",
      NATS_PASSWORD: password,
    });
    const c = capture();
    rt = await createRuntime({ servers: server.url, logger: c.logger, inspect: c.inspect });
    expect(await runJob(rt, "mtls")).toEqual({ status: "succeeded", seen: [1, 2, 3] });
    await rt.stop();
    rt = undefined;
    expectNoSecret(c, password);
  });
});
