/**
 * A queue's limits, the server back with an empty store (its users kept),
 * and a worker whose NATS user has exactly the permissions `natsPermissions()`
 * gives the worker role: it may read the queues bucket, not write it. When
 * only that worker saw the limits (the admin that configured them gone), its
 * write-back of the queue's record is refused: it keeps its limits and its
 * pools stay empty, so nothing of the queue runs until an admin configures
 * it again; an admin's runtime still up writes the record back itself (and
 * its `provision()` makes the shared streams and buckets again). The
 * oracles: the handlers' own ledger (how many run at once, which ran), the
 * record as a raw client with every permission reads it, the pool's consumer
 * as that client sees it, and the server's log of permission violations.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames, permitsConsumer } from "../../src/adapters/names.ts";
import type { PermissionsRequest } from "../../src/api/permissions.ts";
import { heldLedger } from "../harness/held-ledger.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { type RoleServer, startRoleServer } from "../harness/role-server.ts";
import { storedQueueRecord } from "../harness/stored-queue-record.ts";
import { waitUntil, within } from "../harness/wait.ts";

const prefix = "permr";
const names = brokerNames(prefix);
const users: Record<string, PermissionsRequest> = {
  admin: { role: "admin", queues: ["Q", "R"], prefix },
  submitter: { role: "submitter", queues: ["Q", "R"], prefix },
  worker: { role: "worker", queues: ["Q", "R"], prefix },
};
const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => i + from);

describe("a queue's limits, the server back with an empty store, and a least-privilege worker", () => {
  let roles: RoleServer;
  let nc: NatsConnection;

  beforeAll(async () => {
    roles = await startRoleServer(
      users,
      {
        prefix,
        // Back within a tenth of a second of the server (as long as its restart takes).
        connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 1000 },
        jobs: { cleanupIntervalMs: 0 },
      },
      (password) => [`{ user: "raw", password: ${JSON.stringify(password)} }`],
    );
    nc = await connect({
      servers: roles.url,
      user: "raw",
      pass: roles.password,
      name: "raw",
      reconnectTimeWait: 100,
      maxReconnectAttempts: 1000,
    });
  });
  afterAll(async () => {
    await nc?.close();
    await roles?.stop();
  });

  /** The queue's record as the server holds it, read on the test's own connection. */
  const storedRecord = (queue: string) => storedQueueRecord(nc, names.queuesBucket, queue);
  /** Pulls waiting on the queue's concurrency pool: a task at the gate, waiting for a permit. */
  const waitingOnPool = async (queue: string): Promise<number> => {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.consumers.info(names.permitsStream, permitsConsumer(queue, "concurrency"));
    return info.num_waiting;
  };
  /** The worker's write-backs of the queue's record the server refused (and logged). */
  const refusedWriteBacks = async (queue: string): Promise<number> =>
    (await roles.violations()).filter(
      (v) => v.user === "worker" && v.subject === `$KV.${names.queuesBucket}.${queue}`,
    ).length;

  it("only the worker saw the limits: its write-back refused, nothing runs until an admin configures again, then 2 at once", async () => {
    const queue = "Q";
    // The admin that configured the queue is gone by the reset: only the worker saw the limits.
    const admin = await roles.runtimeAs("admin");
    await admin.admin.provision([queue]);
    await admin.queues.configure(queue, { maxConcurrency: 2 });
    await admin.stop();
    const submitter = await roles.runtimeAs("submitter");
    const workerLog = capturedLog("debug");
    const worker = await roles.runtimeAs("worker", workerLog.logger);
    const { handler, ledger, ran, running, runThrough } = heldLedger();
    const serving = worker.workers.start<number, number>({ queue, concurrency: 4, handler });
    const first = await submitter.jobs.submit({ queue, tasks: range(4), ackWaitMs: 30_000 });
    await runThrough(range(4), 2, 20_000);
    expect(await within(first.done(), 20_000)).toMatchObject({ status: "succeeded", done: 4 });
    expect(ledger.most).toBe(2);

    await roles.restartEmpty();
    // A submitter may not make the shared streams and buckets: an admin's runtime that never saw the
    // queue's limits provisions them again (it writes no queue record).
    const provisioner = await roles.runtimeAs("admin");
    await provisioner.admin.provision([queue]);
    await provisioner.stop();
    const tasks = range(6, 100);
    const next = await submitter.jobs.submit({ queue, tasks, ackWaitMs: 30_000 });
    // The worker heard the record gone and tried to write it back (refused), and its tasks are at
    // the gate: a pull waits on the queue's pool, which holds no permit. A task that runs ends the
    // wait (the check below says how many).
    await waitUntil(
      async () =>
        ran.size > 4 || ((await refusedWriteBacks(queue)) >= 1 && (await waitingOnPool(queue)) >= 1),
      { timeoutMs: 20_000, message: "the write-back refused and a task waiting for a permit" },
    );
    // Nothing runs, for as long as a few of its write-backs are tried (200 ms, doubling):
    // an absence needs a span; a worker that ran open would have started its tasks at once.
    const heldSince = Date.now();
    await waitUntil(() => ran.size > 4 || Date.now() - heldSince >= 2000, {
      timeoutMs: 10_000,
      message: "the span nothing may run in",
    });
    expect({
      ran: ran.size,
      running: running.size,
      queueState: serving.stats().queueState,
      stored: await storedRecord(queue),
    }).toEqual({ ran: 4, running: 0, queueState: "limited", stored: "none" });

    const again = await roles.runtimeAs("admin");
    await again.queues.configure(queue, { maxConcurrency: 2 });
    await runThrough(tasks, 2, 30_000);
    expect(await within(next.done(), 20_000)).toMatchObject({ status: "succeeded", done: 6, total: 6 });
    await serving.stop();
    // The worker's write-backs the server refused: once per time it heard the record gone (its
    // watch placed again may hear it twice), not tried again: a retry cannot mend a permission, and
    // each was a violation in the server's log, every 5 s until an admin came. It says so once, at
    // warn: nothing else told why the queue's tasks waited. (Its other refused requests, if any,
    // are creates of what the provisioner had not made again yet.)
    const refused = (await roles.violations()).filter((v) => v.user === "worker");
    const writeBacks = await refusedWriteBacks(queue);
    const told = workerLog.lines.filter(
      (l) => l.level >= 40 && l.queue === queue && /may not write/.test(l.msg),
    );
    expect(
      { oneOrTwoWriteBacks: writeBacks >= 1 && writeBacks <= 2, told: told.length },
      `${writeBacks} write-backs refused; the worker's refused requests: ${[...new Set(refused.map((v) => v.subject))].join(", ")}`,
    ).toEqual({ oneOrTwoWriteBacks: true, told: 1 });
    expect({ ran: ran.size, most: ledger.most, stored: await storedRecord(queue) }).toEqual({
      ran: 10,
      most: 2,
      stored: { operation: "PUT", maxConcurrency: 2 },
    });
  }, 120_000);

  it("the admin that configured the queue is up: it writes the record back, the worker runs 2 at once", async () => {
    const queue = "R";
    const adminLog = capturedLog();
    const admin = await roles.runtimeAs("admin", adminLog.logger);
    await admin.admin.provision([queue]);
    await admin.queues.configure(queue, { maxConcurrency: 2 });
    const submitter = await roles.runtimeAs("submitter");
    const worker = await roles.runtimeAs("worker");
    const { handler, ledger, ran, runThrough } = heldLedger();
    const serving = worker.workers.start<number, number>({ queue, concurrency: 4, handler });
    const first = await submitter.jobs.submit({ queue, tasks: range(4), ackWaitMs: 30_000 });
    await runThrough(range(4), 2, 20_000);
    expect(await within(first.done(), 20_000)).toMatchObject({ status: "succeeded", done: 4 });

    await roles.restartEmpty();
    // The shared streams and buckets the submitter may not make, made again by the runtime that
    // made them before the reset (the queue's record is not among them).
    await admin.admin.provision([queue]);
    await waitUntil(async () => (await storedRecord(queue)) !== "none", {
      timeoutMs: 20_000,
      message: "the queue's record stored again",
    });
    const tasks = range(6, 100);
    const next = await submitter.jobs.submit({ queue, tasks, ackWaitMs: 30_000 });
    await runThrough(tasks, 2, 30_000);
    expect(await within(next.done(), 20_000)).toMatchObject({ status: "succeeded", done: 6, total: 6 });
    await serving.stop();
    // The admin's runtime wrote it (the worker's user may not).
    const wroteBack = adminLog.lines.some((l) => l.queue === queue && l.wrote === true);
    expect({ ran: ran.size, most: ledger.most, stored: await storedRecord(queue), wroteBack }).toEqual({
      ran: 10,
      most: 2,
      stored: { operation: "PUT", maxConcurrency: 2 },
      wroteBack: true,
    });
  }, 120_000);
});
