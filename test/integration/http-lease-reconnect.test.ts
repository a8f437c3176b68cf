/**
 * An HTTP reserve whose pull waits out a reconnect (the server went away
 * between the job's record read and the pull) hands out its whole lease, on
 * a real nats-server: the lease is timed from the pull's sending, once the
 * client is back, not from before that wait. Timed from before it, the
 * receipt came with that much less lease (none once the wait passed it).
 */
import { pino } from "pino";
import { expect, it } from "vitest";
import type { LeasePort } from "../../src/adapters/http/lease-port.ts";
import { ReceiptSigner } from "../../src/adapters/http/receipts.ts";
import { TaskLeases } from "../../src/adapters/http/task-leases.ts";
import { SubmitPhase } from "../../src/kernel/job-record.ts";
import { newRecord, taskBodies } from "../contract/contract-helpers.ts";
import { startRestartableBroker } from "../harness/restartable-broker.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const outageMs = 2000;

it("a reserve whose pull waited for the connection has its whole lease: timed from the pull, sent once back", async () => {
  const log = pino({ level: "silent" });
  const { server, broker, connection, dispose } = await startRestartableBroker("lease-reconnect", log);
  try {
    // 6 s of ack wait, less 600 ms of margin: 5.4 s of lease from the pull's sending.
    const record = { ...newRecord(1, 6000), status: "running" as const, phase: SubmitPhase.committed };
    await broker.createRecord(record);
    await broker.publishTasks(record, taskBodies(1), new AbortController().signal);
    await broker.createConsumer(record.queue, record.id, record.settings);
    const leasing = broker.taskLeasing;
    let away = { from: 0, to: 0 };
    const port: LeasePort = {
      getRecord: (id) => broker.getRecord(id),
      activeJobs: async () => [],
      // The server goes away once the record is read: the pull waits for the client to reconnect.
      fetchTasks: async (queue, jobId, max, pulling) => {
        const from = Date.now();
        await server.kill();
        await waitUntil(() => connection.state === "reconnecting", {
          timeoutMs: 10_000,
          message: "reconnecting",
        });
        const pulled = leasing.fetchTasks(queue, jobId, max, pulling);
        // The outage's length is what is tested (the lease must not pay for it), not a wait for a
        // state: the pull waits for the connection meanwhile.
        await delay(outageMs);
        await server.restart();
        const tasks = await pulled;
        away = { from, to: Date.now() };
        return tasks;
      },
      fetchLane: (queue, max, pulling) => leasing.fetchLane(queue, max, pulling),
      isDeliveryOf: (ref, job) => leasing.isDeliveryOf(ref, job),
      settle: (settles) => leasing.settle(settles),
      claimAnswer: (ref, digest) => leasing.claimAnswer(ref, digest),
      answerOf: (ref) => leasing.answerOf(ref),
      recordAnswer: (ref, answer, revision) => leasing.recordAnswer(ref, answer, revision),
      releaseAnswer: (ref, revision) => leasing.releaseAnswer(ref, revision),
      publishResults: (queue, jobId, body, msgId) => broker.publishResults(queue, jobId, body, msgId),
      storeDeadLetter: async () => {
        throw new Error("no task dies here");
      },
    };
    const leases = new TaskLeases(port, { signer: new ReceiptSigner(), log });
    const caller = { identity: "w1", allows: () => true };
    const tasks = await leases.reserve(record.id, 1, caller);
    const waited = away.to - away.from;
    // The wait was real (a kill, a restart, a reconnect), and the lease did not pay for it.
    expect(waited).toBeGreaterThanOrEqual(outageMs);
    expect(tasks.map((t) => t.id)).toEqual([`${record.id}.0`]);
    expect(tasks[0]!.leaseMs).toBeGreaterThan(5400 - 250);
    expect(tasks[0]!.leaseMs).toBeLessThanOrEqual(5400);
    const [outcome] = await leases.submitResults(
      record.id,
      [{ receipt: tasks[0]!.receipt, ok: true, json: "1" }],
      caller,
    );
    expect(outcome).toMatchObject({ status: "done" });
  } finally {
    await dispose();
  }
});
