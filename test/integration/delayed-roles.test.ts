/**
 * Delayed tasks under least privilege: a nats-server whose users have
 * exactly what `natsPermissions()` gives their roles. A submitter holds
 * tasks for queues A and B, movers (the submitter's and the supervisor's)
 * move them once due, a worker per queue runs them. Oracles: the server's
 * own log of permission violations (none) and the handlers' ledger.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PermissionsRequest } from "../../src/api/permissions.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type AuthFiles, authFiles, loggedViolations, roleUsersConfig } from "../harness/nats-auth.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

const prefix = "perm";
const password = "s3cret-for-tests";
const users: Record<string, PermissionsRequest> = {
  admin: { role: "admin", queues: ["A", "B"], prefix },
  submitter: { role: "submitter", queues: ["A", "B"], prefix },
  supervisor: { role: "supervisor", queues: ["A", "B"], prefix },
  workerA: { role: "worker", queues: ["A"], prefix },
  workerB: { role: "worker", queues: ["B"], prefix },
};

describe("delayed tasks with least-privilege roles", () => {
  let files: AuthFiles;
  let server: NatsServerHandle;
  let logFile: string;
  const runtimes: Runtime[] = [];
  const runtimeAs = async (user: keyof typeof users) => {
    const rt = await createRuntime({
      servers: server.url,
      prefix,
      auth: { user, pass: password },
      roles: users[user]?.role,
      name: user,
      logger: silentLogger(),
      jobs: { cleanupIntervalMs: 0 },
    });
    runtimes.push(rt);
    return rt;
  };

  beforeAll(async () => {
    files = await authFiles();
    logFile = path.join(files.dir, "server.log");
    server = await startNatsServer({
      args: ["-c", await files.file("users.conf", roleUsersConfig(logFile, password, users))],
    });
  });
  afterAll(async () => {
    await Promise.allSettled(runtimes.map((rt) => rt.stop()));
    await server?.dispose();
    await files?.remove();
  });

  it("holds, moves and runs each queue's delayed tasks with no permission violation", async () => {
    // The shared streams and buckets are the admin's to make (the delayed stream is not: the
    // first submitter or mover makes it).
    await (await runtimeAs("admin")).admin.provision(["A", "B"]);
    const submitter = await runtimeAs("submitter");
    await runtimeAs("supervisor");
    const workerA = await runtimeAs("workerA");
    const workerB = await runtimeAs("workerB");
    const ledger: { queue: string; index: number; at: number }[] = [];
    const workers = [
      workerA.workers.start<number, number>({
        queue: "A",
        handler: (task) => {
          ledger.push({ queue: "A", index: task.index, at: Date.now() });
          return task.payload;
        },
      }),
      workerB.workers.start<number, number>({
        queue: "B",
        handler: (task) => {
          ledger.push({ queue: "B", index: task.index, at: Date.now() });
          return task.payload;
        },
      }),
    ];
    const runAt = Date.now() + 700;
    const jobA = await submitter.jobs.submit({ queue: "A", tasks: [0, 1, 2], runAt });
    const jobB = await submitter.jobs.submit({ queue: "B", tasks: [0, 1], runAt });
    const cancelled = await submitter.jobs.submit({ queue: "A", tasks: [9], delayMs: 60_000 });
    await cancelled.cancel("not needed");
    expect(await jobA.done()).toMatchObject({ status: "succeeded", done: 3 });
    expect(await jobB.done()).toMatchObject({ status: "succeeded", done: 2 });
    await Promise.all(workers.map((w) => w.stop()));
    expect(
      ledger
        .filter((h) => h.queue === "A")
        .map((h) => h.index)
        .sort(),
    ).toEqual([0, 1, 2]);
    expect(
      ledger
        .filter((h) => h.queue === "B")
        .map((h) => h.index)
        .sort(),
    ).toEqual([0, 1]);
    for (const h of ledger) expect(h.at).toBeGreaterThanOrEqual(runAt);
    expect(await loggedViolations(logFile)).toEqual([]);
  });
});
