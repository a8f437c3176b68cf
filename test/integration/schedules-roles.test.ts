/**
 * Who may manage schedules, end to end on a server whose users have exactly
 * the permissions `natsPermissions()` gives their roles: a submitter upserts
 * and removes them and its runtime fires their ticks (it makes the bucket on
 * the first upsert); a worker-only runtime may do neither (`RoleNotHeld`)
 * and fires nothing. Oracles: the server's log of permission violations
 * (none) and the worker's ledger.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PermissionsRequest } from "../../src/api/permissions.ts";
import { RoleNotHeld } from "../../src/kernel/errors.ts";
import { type RoleServer, startRoleServer } from "../harness/role-server.ts";
import { waitUntil } from "../harness/wait.ts";

const prefix = "sperm";
const users: Record<string, PermissionsRequest> = {
  admin: { role: "admin", queues: ["S"], prefix },
  submitter: { role: "submitter", queues: ["S"], prefix },
  worker: { role: "worker", queues: ["S"], prefix },
};

describe("schedules with least-privilege roles", () => {
  let roles: RoleServer;
  const runtimeAs = (user: keyof typeof users) => roles.runtimeAs(user);

  beforeAll(async () => {
    roles = await startRoleServer(users, {
      prefix,
      connection: { operationTimeoutMs: 4000, retry: { attempts: 1 } },
      jobs: { cleanupIntervalMs: 0, reapIntervalMs: 0 },
    });
  });
  afterAll(async () => {
    await roles?.stop();
  });

  it("a submitter upserts, lists, fires and removes; a worker may not; no violation logged", async () => {
    await (await runtimeAs("admin")).admin.provision(["S"]);
    const submitter = await runtimeAs("submitter");
    const worker = await runtimeAs("worker");
    const handled: string[] = [];
    worker.workers.start<unknown, null>({
      queue: "S",
      handler: (task) => {
        handled.push(task.jobId);
        return null;
      },
    });
    const job = { queue: "S", tasks: [1] };
    await expect(worker.schedules.upsert({ id: "w", everyMs: 500, job })).rejects.toBeInstanceOf(RoleNotHeld);
    await expect(worker.schedules.list()).rejects.toBeInstanceOf(RoleNotHeld);
    await expect(worker.schedules.remove("w")).rejects.toBeInstanceOf(RoleNotHeld);

    await submitter.schedules.upsert({ id: "s", everyMs: 500, job });
    expect((await submitter.schedules.list()).map((s) => s.id)).toEqual(["s"]);
    await waitUntil(() => handled.length >= 2, { timeoutMs: 10_000, message: "two ticks handled" });
    // A tick's lastTick is written after its job's submit: a job can be handled before it.
    await waitUntil(async () => ((await submitter.schedules.get("s"))?.lastTick ?? 0) > 0, {
      timeoutMs: 10_000,
      message: "the schedule's lastTick written, read as the submitter",
    });
    expect(await submitter.schedules.remove("s")).toBe(true);
    expect(await submitter.schedules.list()).toEqual([]);
    expect(await roles.violations()).toEqual([]);
  }, 30_000);
});
