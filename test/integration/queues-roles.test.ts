/**
 * Queue controls under least privilege: a nats-server whose users have
 * exactly the permissions `natsPermissions()` gives their roles. The admin
 * provisions, configures and pauses; a worker of queue A, which may only
 * read the queues bucket and take A's permits, obeys the limits and the
 * pause; the submitter reads the settings. The oracles: the server's own
 * log of permission violations, and the handlers' ledger.
 */
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PermissionsRequest } from "../../src/api/permissions.ts";
import { RoleNotHeld } from "../../src/kernel/errors.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { type RoleServer, startRoleServer } from "../harness/role-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const prefix = "permq";
const users: Record<string, PermissionsRequest> = {
  admin: { role: "admin", queues: ["A", "B"], prefix },
  submitter: { role: "submitter", queues: ["A"], prefix },
  workerA: { role: "worker", queues: ["A"], prefix },
};

describe("queue controls with least-privilege users", () => {
  let roles: RoleServer;
  const runtimeAs = (user: keyof typeof users) => roles.runtimeAs(user);
  // The worker's log is kept: its queue gate logs the pause it sees.
  const workerLog = capturedLog();

  beforeAll(async () => {
    roles = await startRoleServer(users, {
      prefix,
      connection: { operationTimeoutMs: 4000, retry: { attempts: 1 } },
      jobs: { cleanupIntervalMs: 0 },
    });
  });
  afterAll(async () => {
    await roles?.stop();
  });

  it("the admin configures and pauses; a worker of A obeys with its own permissions; others may only read", async () => {
    const admin = await runtimeAs("admin");
    await admin.admin.provision(["A", "B"]);
    await admin.queues.configure("A", { maxConcurrency: 2, ratePerSecond: 50 });
    await admin.queues.configure("B", { maxConcurrency: 1 });
    // A lease change updates the pools' consumers: an admin's request too.
    await admin.queues.configure("A", { permitLeaseMs: 10_000 });
    const submitter = await runtimeAs("submitter");
    const worker = await roles.runtimeAs("workerA", workerLog.logger);

    // Only the admin changes a queue; every role reads.
    await expect(worker.queues.pause("A")).rejects.toBeInstanceOf(RoleNotHeld);
    await expect(submitter.queues.configure("A", { maxConcurrency: 9 })).rejects.toBeInstanceOf(RoleNotHeld);
    expect(await submitter.queues.get("A")).toMatchObject({ maxConcurrency: 2, ratePerSecond: 50 });
    expect((await worker.queues.list()).map((q) => q.queue)).toEqual(["A", "B"]);

    const intervals: Array<{ start: number; end: number }> = [];
    let running = 0;
    let most = 0;
    worker.workers.start({
      queue: "A",
      concurrency: 6,
      handler: async () => {
        running++;
        most = Math.max(most, running);
        const start = Date.now();
        // The task's own work: it holds its permit for a while, so that tasks can overlap up to the cap.
        await delay(40);
        running--;
        intervals.push({ start, end: Date.now() });
        return "ok";
      },
    });
    const job = await submitter.jobs.submit({ queue: "A", tasks: Array.from({ length: 20 }, (_, i) => i) });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 20 });
    expect(most).toBe(2);

    await admin.queues.pause("A");
    // The pause has reached the worker: its queue gate saw it (from the settings it watches).
    await waitUntil(() => workerLog.lines.some((l) => l.queue === "A" && l.msg === "queue paused"), {
      timeoutMs: 10_000,
      message: "the worker of A to see its queue paused",
    });
    const before = intervals.length;
    const paused = await submitter.jobs.submit({ queue: "A", tasks: [0, 1, 2] });
    // The window the pause must hold: a task of the paused job started in it would show here.
    await delay(1000);
    expect(intervals.length).toBe(before);
    await admin.queues.resume("A");
    expect(await paused.done()).toMatchObject({ status: "succeeded", done: 3 });

    // The worker of A's user may not take B's permits: refused by the server, which logs it.
    const raw = await connect({ servers: roles.url, user: "workerA", pass: roles.password });
    try {
      const taken = jetstream(raw)
        .consumers.get(`${prefix}_permits`, "concurrency_B")
        .then((c) => c.next({ expires: 1000 }));
      await expect(taken).rejects.toThrow();
    } finally {
      await raw.close();
    }
    await waitUntil(async () => (await roles.violations()).length > 0, {
      timeoutMs: 3000,
      message: "the refused pull logged",
    });
    const violations = await roles.violations();
    // Nothing but what was provoked: every violation is the raw pull at B's permits.
    expect(violations.every((v) => v.user === "workerA" && v.subject.includes("concurrency_B"))).toBe(true);
  }, 30_000);
});
