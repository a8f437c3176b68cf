/**
 * `rt.admin.diagnose()` (the CLI's `doctor`, exit 5 on a problem) run by an
 * admin of some queues (`natsPermissions({ role: "admin", queues: ["A"] })`)
 * on a server that also holds queue B: a set-up the docs name (what such an
 * admin may not read of another queue's is left out). Its grants are
 * exactly those natsPermissions gives, so nothing is wrong with it; but the
 * role probes are built for every queue found on the server, B's included,
 * so each role reads as refused and doctor says "this identity may not make
 * the calls of any role". doctor-queue-resources.test.ts's case of this
 * set-up keeps only the problems naming B, which this one does not. The
 * oracle: the same identity submits, configures and provisions queue A.
 */
import path from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { InvalidArgument } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type AuthFiles, authFiles, roleUsersConfig } from "../harness/nats-auth.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

const password = "doctor-some-s3cret";
let files: AuthFiles;
let server: NatsServerHandle;
const runtimes: Runtime[] = [];

const runtimeAs = async (user: "adminA" | "adminAB"): Promise<Runtime> => {
  const rt = await createRuntime({
    servers: server.url,
    auth: { user, pass: password },
    roles: "admin",
    logger: silentLogger(),
  });
  runtimes.push(rt);
  return rt;
};

beforeAll(async () => {
  files = await authFiles();
  const users = {
    adminA: { role: "admin", queues: ["A"] },
    adminAB: { role: "admin", queues: ["A", "B"] },
  } as const;
  const conf = roleUsersConfig(path.join(files.dir, "server.log"), password, users);
  server = await startNatsServer({ args: ["-c", await files.file("users.conf", conf)] });
  const all = await runtimeAs("adminAB");
  await all.admin.provision(["A", "B"]);
}, 60_000);
afterAll(async () => {
  for (const rt of runtimes.splice(0)) await rt.stop();
  await server?.dispose();
  await files?.remove();
});

it("an admin of queue A, on a server with queue B too: its own work goes through, and doctor finds no problem", async () => {
  const rt = await runtimeAs("adminA");
  await rt.queues.configure("A", { maxConcurrency: 2 });
  await rt.admin.provision(["A"]);
  const d = await rt.admin.diagnose();
  // Fails on the current code: "this identity may not make the calls of any role" (every role's
  // probes name B's streams: d.roles[].denied lists them).
  expect(d.problems, JSON.stringify(d.roles.find((r) => r.role === "admin"))).toEqual([]);
});

it("told it is meant for A and B, an admin granted A only is told what B's grants lack; its work on B is refused", async () => {
  const rt = await runtimeAs("adminA");
  const meantFor = { roles: "admin", queues: ["A", "B"] } as const;
  const d = await rt.admin.diagnose(meantFor);
  expect(d.problems.map((p) => p.what)).toEqual([
    expect.stringMatching(/^this identity may not make the admin role's calls for queues A, B: refused .*_B/),
  ]);
  // The oracle: the server refuses this identity B's set-up.
  await expect(rt.admin.provision(["B"])).rejects.toThrow();
  // An admin granted both, told the same, has no problem.
  expect((await (await runtimeAs("adminAB")).admin.diagnose(meantFor)).problems).toEqual([]);
});

it("what an identity is meant for is checked: an unknown role or a bad queue name is an InvalidArgument", async () => {
  const rt = await runtimeAs("adminAB");
  await expect(rt.admin.diagnose({ roles: ["boss" as "admin"] })).rejects.toBeInstanceOf(InvalidArgument);
  await expect(rt.admin.diagnose({ queues: ["a b"] })).rejects.toBeInstanceOf(InvalidArgument);
  await expect(rt.admin.diagnose({ queue: "A" } as never)).rejects.toBeInstanceOf(InvalidArgument);
});
