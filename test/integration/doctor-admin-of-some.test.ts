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
