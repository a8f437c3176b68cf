/**
 * A limit per agent target under least privilege: a worker user with exactly
 * the permissions `natsPermissions()` gives its role fills its queue's target
 * pools on first use and obeys them; it may not reach another queue's. The
 * oracles: the handlers' ledger and the server's log of permission violations.
 */
import path from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PermissionsRequest } from "../../src/api/permissions.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type AuthFiles, authFiles, loggedViolations, roleUsersConfig } from "../harness/nats-auth.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const prefix = "permt";
const password = "s3cret-for-tests";
const users: Record<string, PermissionsRequest> = {
  admin: { role: "admin", queues: ["A", "B"], prefix },
  submitter: { role: "submitter", queues: ["A"], prefix },
  workerA: { role: "worker", queues: ["A"], prefix },
};

describe("per-target limits with least-privilege users", () => {
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
      connection: { operationTimeoutMs: 4000, retry: { attempts: 1 } },
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

  it("a worker of A fills and takes A's target pools with its own permissions, and no other queue's", async () => {
    const admin = await runtimeAs("admin");
    await admin.admin.provision(["A", "B"]);
    await admin.queues.configure("A", { perTarget: { maxConcurrency: 2 } });
    await admin.queues.configure("B", { perTarget: { maxConcurrency: 1 } });
    const submitter = await runtimeAs("submitter");
    const worker = await runtimeAs("workerA");
    await worker.agents.register({
      agentId: "agent-a",
      targets: ["https://x.example"],
      current: "https://x.example",
    });
    let running = 0;
    let most = 0;
    worker.workers.start({
      queue: "A",
      agent: "agent-a",
      concurrency: 6,
      handler: async () => {
        running++;
        most = Math.max(most, running);
        await delay(40);
        running--;
        return "ok";
      },
    });
    const job = await submitter.jobs.submit({ queue: "A", tasks: Array.from({ length: 12 }, (_, i) => i) });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 12 });
    expect(most).toBe(2);
    expect(await loggedViolations(logFile)).toEqual([]);

    // B's target pools are out of its reach: the server refuses and logs it.
    const raw = await connect({ servers: server.url, user: "workerA", pass: password });
    try {
      await expect(jetstream(raw).publish(`${prefix}.tpermits.B.x.y.concurrency`, "1")).rejects.toThrow();
    } finally {
      await raw.close();
    }
    await waitUntil(async () => (await loggedViolations(logFile)).length > 0, {
      timeoutMs: 3000,
      message: "the refused publish logged",
    });
    const violations = await loggedViolations(logFile);
    expect(violations.every((v) => v.user === "workerA" && v.subject.includes("tpermits.B"))).toBe(true);
  }, 30_000);
});
