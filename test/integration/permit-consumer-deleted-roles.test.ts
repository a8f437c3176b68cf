/**
 * A queue's concurrency pool consumer deleted by hand (`nats consumer rm`)
 * under a worker connected as a user with exactly the permissions
 * `natsPermissions()` gives the worker role: the queue's work must not stop
 * for good. The oracles: the handlers' ledger, the consumer as a raw client
 * of the test's own (a user with every permission) lists it, and the
 * server's log of permission violations.
 */
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames, permitsConsumer } from "../../src/adapters/names.ts";
import type { PermissionsRequest } from "../../src/api/permissions.ts";
import { type RoleServer, startRoleServer } from "../harness/role-server.ts";
import { within } from "../harness/wait.ts";

const prefix = "permd";
const names = brokerNames(prefix);
const users: Record<string, PermissionsRequest> = {
  admin: { role: "admin", queues: ["Q"], prefix },
  submitter: { role: "submitter", queues: ["Q"], prefix },
  worker: { role: "worker", queues: ["Q"], prefix },
};
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe("a permit pool consumer deleted by hand under a least-privilege worker", () => {
  let roles: RoleServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const runtimeAs = (user: keyof typeof users) => roles.runtimeAs(user);

  beforeAll(async () => {
    roles = await startRoleServer(users, { prefix, jobs: { cleanupIntervalMs: 0 } }, (password) => [
      `{ user: "raw", password: ${JSON.stringify(password)} }`,
    ]);
    nc = await connect({ servers: roles.url, user: "raw", pass: roles.password, name: "raw" });
    jsm = await jetstreamManager(nc);
  });
  afterAll(async () => {
    await nc?.close();
    await roles?.stop();
  });

  it("the next job's tasks all run", async () => {
    const admin = await runtimeAs("admin");
    await admin.admin.provision(["Q"]);
    await admin.queues.configure("Q", { maxConcurrency: 2, permitLeaseMs: 7000 });
    const submitter = await runtimeAs("submitter");
    const worker = await runtimeAs("worker");
    const ran = new Set<number>();
    const serving = worker.workers.start<number, number>({
      queue: "Q",
      concurrency: 4,
      handler: (task) => {
        ran.add(task.payload);
        return task.payload;
      },
    });
    const first = await submitter.jobs.submit({ queue: "Q", tasks: range(4) });
    expect(await within(first.done(), 20_000)).toMatchObject({ status: "succeeded", done: 4 });
    const consumer = permitsConsumer("Q", "concurrency");
    await jsm.consumers.delete(names.permitsStream, consumer);

    const next = await submitter.jobs.submit({ queue: "Q", tasks: range(10).map((n) => n + 100) });
    const end = await within(next.done(), 30_000);
    let back = false;
    for await (const c of jsm.consumers.list(names.permitsStream)) if (c.name === consumer) back = true;
    const refused = (await roles.violations()).filter((v) => v.user === "worker");
    expect(
      { end, ran: ran.size, back },
      `the worker's refused requests: ${refused.length}, first: ${refused[0]?.subject}`,
    ).toMatchObject({ end: { status: "succeeded", done: 10, total: 10 }, ran: 14, back: true });
    // The next case's worker alone serves the queue (its ledger counts every task).
    await serving.stop();
  }, 60_000);

  // The worker may not make the shared permits stream: the admin makes it again (`provision`), and
  // the worker, finding its pool empty, publishes the record's permits again (its queue's only).
  it("the permits stream deleted and made again empty by the admin: the next job's tasks all run", async () => {
    const admin = await runtimeAs("admin");
    const submitter = await runtimeAs("submitter");
    const worker = await runtimeAs("worker");
    const ran = new Set<number>();
    worker.workers.start<number, number>({
      queue: "Q",
      concurrency: 4,
      handler: (task) => {
        ran.add(task.payload);
        return task.payload;
      },
    });
    await jsm.streams.delete(names.permitsStream);
    await admin.admin.provision(["Q"]);

    const next = await submitter.jobs.submit({ queue: "Q", tasks: range(10).map((n) => n + 200) });
    const end = await within(next.done(), 30_000);
    const subject = names.permitsSubject("Q", "concurrency");
    const info = await jsm.streams.info(names.permitsStream, { subjects_filter: subject });
    const refused = (await roles.violations()).filter((v) => v.user === "worker");
    expect(
      { end, ran: ran.size, permits: info.state.subjects?.[subject] ?? 0 },
      `the worker's refused requests: ${refused.length}, first: ${refused[0]?.subject}`,
    ).toMatchObject({ end: { status: "succeeded", done: 10, total: 10 }, ran: 10, permits: 2 });
  }, 60_000);
});
