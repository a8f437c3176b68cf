/**
 * Delayed tasks under least privilege: a nats-server whose users have
 * exactly what `natsPermissions()` gives their roles. A submitter holds
 * tasks for queues A and B, movers (the submitter's and the supervisor's)
 * move them once due, a worker per queue runs them; then users of one queue
 * each, whose raw attempts at the other queue's held tasks the server
 * refuses. Oracles: the server's own log of permission violations (none in
 * normal operation; the raw attempts, each), the handlers' ledger and B's
 * delayed stream read by the admin's own nats.js client.
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PermissionsRequest } from "../../src/api/permissions.ts";
import { type RoleServer, startRoleServer } from "../harness/role-server.ts";
import { waitUntil } from "../harness/wait.ts";

const prefix = "perm";
const users: Record<string, PermissionsRequest> = {
  admin: { role: "admin", queues: ["A", "B"], prefix },
  submitter: { role: "submitter", queues: ["A", "B"], prefix },
  supervisor: { role: "supervisor", queues: ["A", "B"], prefix },
  workerA: { role: "worker", queues: ["A"], prefix },
  workerB: { role: "worker", queues: ["B"], prefix },
  // One queue each: a held task of the other queue is out of their reach.
  submitterA: { role: "submitter", queues: ["A"], prefix },
  supervisorA: { role: "supervisor", queues: ["A"], prefix },
  submitterB: { role: "submitter", queues: ["B"], prefix },
};

describe("delayed tasks with least-privilege roles", () => {
  let roles: RoleServer;
  const runtimeAs = (user: keyof typeof users) => roles.runtimeAs(user);

  beforeAll(async () => {
    roles = await startRoleServer(users, { prefix, jobs: { cleanupIntervalMs: 0 } });
  });
  afterAll(async () => {
    await roles?.stop();
  });

  it("holds, moves and runs each queue's delayed tasks with no permission violation", async () => {
    // The shared streams and buckets are the admin's to make; so are A's and B's delayed streams
    // here (a queue's first hold makes it too, for a submitter allowed that queue).
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
    expect(await roles.violations()).toEqual([]);
  });

  it("a user of queue A alone moves A's held tasks and can neither read nor pull B's", async () => {
    await (await runtimeAs("admin")).admin.provision(["A", "B"]);
    const submitterA = await runtimeAs("submitterA");
    await runtimeAs("supervisorA");
    const submitterB = await runtimeAs("submitterB");
    const workerA = await runtimeAs("workerA");
    const handled: number[] = [];
    const worker = workerA.workers.start<number, number>({
      queue: "A",
      handler: (task) => {
        handled.push(task.payload);
        return task.payload;
      },
    });
    const heldB = await submitterB.jobs.submit({ queue: "B", tasks: [7, 8], delayMs: 600_000 });
    const jobA = await submitterA.jobs.submit({ queue: "A", tasks: [1, 2], delayMs: 300 });
    expect(await jobA.done()).toMatchObject({ status: "succeeded", done: 2 });
    await worker.stop();
    expect(handled.sort()).toEqual([1, 2]);
    // Normal operation: the server refused nothing of the delayed tasks to anyone. (Not ours: a
    // supervisor of A alone looks up B's advisories stream too, its dead-letter processing finding
    // the queues by the stream names; that one refusal is allowed here, and only that one.)
    const allowed = (v: { subject: string }) =>
      v.subject.startsWith(`$JS.API.STREAM.INFO.${prefix}_advisories_`);
    const normal = await roles.violations();
    expect(normal.filter((v) => !allowed(v))).toEqual([]);

    // The user of A, raw: B's delayed stream is refused to it, read, got, pulled or deleted.
    const nc = await connect({ servers: roles.url, user: "submitterA", pass: roles.password, timeout: 2000 });
    const stream = `${prefix}_delayed_B`;
    const subject = `${prefix}.delayed.B.${heldB.id}`;
    try {
      const jsm = await jetstreamManager(nc, { timeout: 1000 });
      const attempts: Record<string, () => Promise<unknown>> = {
        info: () => jsm.streams.info(stream),
        get: () => jsm.streams.getMessage(stream, { last_by_subj: subject }),
        direct: () => jsm.direct.getMessage(stream, { last_by_subj: subject }),
        pull: async () => {
          const consumer = await jetstream(nc, { timeout: 1000 }).consumers.get(stream, "due");
          return consumer.next({ expires: 1000 });
        },
        next: () => nc.request(`$JS.API.CONSUMER.MSG.NEXT.${stream}.due`, '{"batch":1}', { timeout: 1000 }),
        delete: () => jsm.streams.deleteMessage(stream, 1),
        hold: () => nc.request(subject, "forged", { timeout: 1000 }),
      };
      for (const [what, attempt] of Object.entries(attempts)) await expect(attempt(), what).rejects.toThrow();
    } finally {
      await nc.close();
    }
    await waitUntil(async () => (await roles.violations()).some((v) => v.subject.includes("MSG.NEXT")), {
      timeoutMs: 5000,
      message: "the server logged the refused attempts",
    });
    // The allowed refusal may come again meanwhile (each listing of the queues looks B up): ci45.
    const refused = (await roles.violations()).slice(normal.length).filter((v) => !allowed(v));
    expect(refused.every((v) => v.user === "submitterA")).toBe(true);
    for (const verb of [
      "STREAM.INFO",
      "STREAM.MSG.GET",
      "DIRECT.GET",
      "CONSUMER.MSG.NEXT",
      "STREAM.MSG.DELETE",
    ])
      expect(
        refused.some((v) => v.subject.startsWith(`$JS.API.${verb}.${stream}`)),
        verb,
      ).toBe(true);
    expect(refused.some((v) => v.subject === subject)).toBe(true);

    // B's held tasks are all still there, untouched, as the admin reads them.
    const admin = await connect({ servers: roles.url, user: "admin", pass: roles.password });
    try {
      const info = await (await jetstreamManager(admin)).streams.info(stream, { subjects_filter: subject });
      expect(info.state.subjects?.[subject]).toBe(2);
    } finally {
      await admin.close();
    }
  });
});
