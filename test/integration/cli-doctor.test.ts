/**
 * `jetstate-jobs doctor` on a server without JetStream, and with the
 * credential variables on a nats-server
 * whose users have exactly the permissions `natsPermissions()` gives their
 * roles (and one user with none of them). The CLI reads `NATS_USER` and
 * `NATS_PASSWORD` as the runtime does. The oracle for "which roles does
 * this identity allow" is the server's own log of permission violations:
 * every subject the CLI calls denied was refused by the server to that user,
 * and every refusal it logged during the run is one the CLI reports.
 */
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PermissionsRequest } from "../../src/api/permissions.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type BuiltCli, buildCli, type CliRun, runCli } from "../harness/cli.ts";
import { type AuthFiles, authFiles, loggedViolations, roleUsersConfig } from "../harness/nats-auth.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const password = "cli-s3cret";
const users: Record<string, PermissionsRequest> = {
  admin: { role: "admin", queues: ["A"] },
  workerA: { role: "worker", queues: ["A"] },
};

const usersConfig = (logFile: string): string =>
  roleUsersConfig(logFile, password, users, [
    // Replies only: allowed none of jetstate's calls.
    `{ user: "nobody", password: ${JSON.stringify(password)}, permissions: { publish: { allow: ["_INBOX.>"] }, subscribe: { allow: ["_INBOX.>"] } } }`,
  ]);

interface Diagnosis {
  roles: { role: string; allowed: boolean; denied: string[] }[];
  stores: { name: string; present: boolean | null; firstUse?: string }[];
  problems: { what: string; fix: string }[];
  clock: { skewMs: number } | { error: string };
}

describe("jetstate-jobs doctor with the server's users", () => {
  let files: AuthFiles;
  let logFile: string;
  let server: NatsServerHandle;
  let cli: BuiltCli;

  /** Violations the server logged for `user`, in its own words. */
  const violations = async (user: string): Promise<string[]> =>
    (await loggedViolations(logFile)).filter((v) => v.user === user).map((v) => v.subject);
  const doctorAs = (user: string, pass = password, ...meantFor: string[]): Promise<CliRun> =>
    runCli(cli.bin, ["--timeout", "3", "doctor", "--json", ...meantFor], {
      NATS_URL: server.url,
      NATS_USER: user,
      NATS_PASSWORD: pass,
    });

  beforeAll(async () => {
    files = await authFiles();
    logFile = path.join(files.dir, "server.log");
    [server, cli] = await Promise.all([
      (async () => startNatsServer({ args: ["-c", await files.file("users.conf", usersConfig(logFile))] }))(),
      buildCli(),
    ]);
    const admin = await createRuntime({
      servers: server.url,
      auth: { user: "admin", pass: password },
      roles: "admin",
      logger: silentLogger(),
    });
    await admin.admin.provision(["A"]);
    // Limits, so that doctor as the admin reads the pools and their consumers with its own grants.
    await admin.queues.configure("A", {
      maxConcurrency: 2,
      ratePerSecond: 10,
      perTarget: { maxConcurrency: 1 },
    });
    await admin.stop();
  }, 60_000);

  afterAll(async () => {
    await server?.dispose();
    await files?.remove();
    await cli?.remove();
  });

  /** Each user's run checked against the server's log of what it refused that user. */
  const checkAgainstLog = async (user: string, d: Diagnosis) => {
    const denied = d.roles.flatMap((r) => r.denied);
    // The server logs asynchronously to its file: wait for every refusal the CLI reports.
    await waitUntil(async () => denied.every((s) => violations(user).then((v) => v.includes(s))), {
      timeoutMs: 5000,
      message: `the server logged every subject the CLI says ${user} is denied`,
    }).catch(() => undefined);
    const logged = new Set(await violations(user));
    for (const s of denied) expect(logged, `${user} denied ${s}`).toContain(s);
    // Nothing else was refused but doctor's own two reads (the stream list, the clock's
    // consumer; they have their fallbacks): a refused probe the CLI missed would be here.
    // The clock's consumer is named (`clock_<nuid>`): its create's subject ends with its name.
    const clockRead = (s: string) => s.startsWith("$JS.API.CONSUMER.CREATE.jetstate_results.clock_");
    for (const s of logged)
      if (s !== "$JS.API.STREAM.LIST" && !clockRead(s))
        expect(denied, `${user}: the server refused ${s}`).toContain(s);
    if ([...logged].some(clockRead)) expect(d.clock).toHaveProperty("error");
  };

  it("an admin: allowed the admin role, every stream provisioned present, exit 0", async () => {
    const r = await doctorAs("admin");
    expect(r.code, r.stderr).toBe(0);
    const d = JSON.parse(r.stdout) as Diagnosis;
    expect(d.roles.find((x) => x.role === "admin")?.allowed).toBe(true);
    // Provision made every store, the HTTP API's answers bucket included.
    expect(d.stores.filter((s) => s.present !== true)).toEqual([]);
    // An admin lists the streams: the queue's delayed stream and the permits stream are checked too.
    for (const name of ["jetstate_delayed_A", "jetstate_permits", "jetstate_tpermits_A"])
      expect(
        d.stores.find((s) => s.name === name),
        name,
      ).toMatchObject({ present: true });
    await checkAgainstLog("admin", d);
  });

  it("a worker of queue A: allowed the worker role and not the admin's; nothing it cannot read called missing", async () => {
    const r = await doctorAs("workerA");
    const d = JSON.parse(r.stdout) as Diagnosis;
    expect(r.code, `${r.stderr}\n${JSON.stringify(d.problems)}`).toBe(0);
    const allowed = Object.fromEntries(d.roles.map((x) => [x.role, x.allowed]));
    expect(allowed).toMatchObject({ worker: true, admin: false });
    expect(d.problems).toEqual([]);
    await checkAgainstLog("workerA", d);
  });

  it("a worker of queue A told it is meant for A and B: exit 5, the problem names the worker role and B's refused calls", async () => {
    const meant = ["--role", "worker", "--queue", "A", "B"];
    const r = await doctorAs("workerA", password, ...meant);
    expect(r.code, r.stderr).toBe(5);
    const d = JSON.parse(r.stdout) as Diagnosis;
    const worker = d.roles.find((x) => x.role === "worker");
    expect(worker?.allowed).toBe(false);
    // Every refusal names B (A's calls are granted), and the server refused each to this user.
    expect(worker?.denied.length).toBeGreaterThan(0);
    for (const s of worker?.denied ?? []) expect(s).toMatch(/_B\b|\.B\b/);
    expect(d.problems.map((p) => p.what)).toEqual([
      expect.stringMatching(/^this identity may not make the worker role's calls for queues A, B: refused /),
    ]);
    await checkAgainstLog("workerA", d);
    // Told A only, the same identity is fine.
    const onlyA = await doctorAs("workerA", password, "--role", "worker", "--queue", "A");
    expect(onlyA.code, onlyA.stdout).toBe(0);
  });

  it("an identity allowed no role's calls: a problem saying so, exit 5", async () => {
    const r = await doctorAs("nobody");
    expect(r.code, r.stderr).toBe(5);
    const d = JSON.parse(r.stdout) as Diagnosis;
    expect(d.roles, JSON.stringify(d.roles, null, 1)).toEqual(d.roles.map((x) => ({ ...x, allowed: false })));
    expect(d.problems.map((p) => p.what)).toContain("this identity may not make the calls of any role");
    await checkAgainstLog("nobody", d);
  });

  it("a server without JetStream: a problem saying so with what to do, exit 5", async () => {
    const bare = await startNatsServer({ jetstream: false });
    try {
      const r = await runCli(cli.bin, ["--timeout", "3", "doctor", "--json"], { NATS_URL: bare.url });
      expect(r.code, r.stderr).toBe(5);
      const d = JSON.parse(r.stdout) as Diagnosis & { server: { jetstream: boolean; version: string } };
      // The oracle: the server's own monitoring endpoint.
      expect(d.server).toMatchObject({ jetstream: false, version: await bare.version() });
      expect(d.problems[0]?.what).toMatch(/^JetStream is off/);
      expect(d.problems[0]?.fix).toMatch(/-js/);
    } finally {
      await bare.dispose();
    }
  });

  it("a stream listing the server does not answer is not read as nothing listed: never exit 0 with a queue's stream missing", async () => {
    // The account maps the listing to a subject nobody answers: JetStream answers everything else.
    const conf = await files.file("unlisted.conf", 'mappings = { "$JS.API.STREAM.LIST": "nowhere.list" }\n');
    const unlisted = await startNatsServer({ args: ["-c", conf] });
    try {
      const admin = await createRuntime({ servers: unlisted.url, roles: "admin", logger: silentLogger() });
      await admin.admin.provision(["A"]);
      await admin.stop();
      const nc = await connect({ servers: unlisted.url });
      await (await jetstreamManager(nc)).streams.delete("jetstate_advisories_A");
      await nc.close();
      const r = await runCli(cli.bin, ["--timeout", "3", "doctor", "--json"], { NATS_URL: unlisted.url });
      // Not a diagnosis at all (nothing on stdout): NATS did not answer within the timeout.
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(4);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/^TransientBrokerError: admin\.diagnose: /);
    } finally {
      await unlisted.dispose();
    }
  });

  it("a queue's resource broken (its delayed stream's due consumer removed): exit 5, the problem printed naming it", async () => {
    const nc = await connect({ servers: server.url, user: "admin", pass: password });
    try {
      await (await jetstreamManager(nc)).consumers.delete("jetstate_delayed_A", "due");
    } finally {
      await nc.close();
    }
    const r = await runCli(cli.bin, ["--timeout", "3", "doctor"], {
      NATS_URL: server.url,
      NATS_USER: "admin",
      NATS_PASSWORD: password,
    });
    expect(r.code, r.stderr).toBe(5);
    expect(r.stdout).toMatch(/^PROBLEM: consumer due of stream jetstate_delayed_A is missing/m);
    expect(r.stdout).toMatch(/^\s+fix: run `rt\.admin\.provision\(\["A"\]\)`/m);
  });

  it("a wrong password: exit 4 within the timeout, one line on stderr", async () => {
    const r = await doctorAs("admin", "wrong");
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).not.toContain("wrong");
  });
});
