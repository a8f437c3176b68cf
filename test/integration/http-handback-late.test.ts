/**
 * The hand-back of tasks leased for an HTTP worker that went away
 * mid-reserve: its nak waits for a lost connection past the deliveries'
 * lease, and sent then it handed back the task's next holder's delivery (a
 * third worker got the task while the second ran it), as a late settle of
 * results did (http-settle-late.test.ts; found by a review). Only this
 * instance's connection is cut (a TCP proxy); the oracle is the server's
 * deliveries, pulled raw.
 */
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import type { LeasePort } from "../../src/adapters/http/lease-port.ts";
import { ReceiptSigner } from "../../src/adapters/http/receipts.ts";
import { TaskLeases } from "../../src/adapters/http/task-leases.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { SubmitPhase } from "../../src/kernel/job-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { newRecord, taskBodies } from "../contract/contract-helpers.ts";
import { lateNaks } from "../harness/late-naks.ts";
import { startNatsServer } from "../harness/nats-server.ts";
import { tcpProxy } from "../harness/tcp-proxy.ts";

it("a hand-back nak whose connection came back after the delivery's lease is not sent", async () => {
  const log = silentLogger();
  const server = await startNatsServer();
  const proxy = await tcpProxy(server.url);
  const core = await createRuntimeCore({
    servers: proxy.url,
    logger: log,
    connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
  });
  const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "late-handback" });
  const raw = await connect({ servers: server.url });
  try {
    const record = {
      ...newRecord(1, 2000, { backoffMs: [0] }),
      status: "running" as const,
      phase: SubmitPhase.committed,
    };
    await broker.createRecord(record);
    await broker.publishTasks(record, taskBodies(1), new AbortController().signal);
    await broker.createConsumer(record.queue, record.id, record.settings);
    const leasing = broker.taskLeasing;
    const consumer = await jetstream(raw).consumers.get(`jetstate_tasks_${record.queue}`, record.id);
    const late = lateNaks(
      leasing.settle.bind(leasing),
      proxy,
      () => core.connection.state === "connected",
      consumer,
    );
    const gone = new AbortController();
    const port: LeasePort = {
      getRecord: (id) => broker.getRecord(id),
      activeJobs: async () => [],
      fetchTasks: async (q, j, m, pulling) => {
        const tasks = await leasing.fetchTasks(q, j, m, pulling);
        gone.abort(); // the worker's request went away as the tasks came
        return tasks;
      },
      fetchLane: (q, m, pulling) => leasing.fetchLane(q, m, pulling),
      isDeliveryOf: (ref, job) => leasing.isDeliveryOf(ref, job),
      settle: late.settle,
      claimAnswer: (ref, digest) => leasing.claimAnswer(ref, digest),
      answerOf: (ref) => leasing.answerOf(ref),
      recordAnswer: (ref, answer, revision) => leasing.recordAnswer(ref, answer, revision),
      releaseAnswer: (ref, revision) => leasing.releaseAnswer(ref, revision),
      publishResults: (q, j, body, id) => broker.publishResults(q, j, body, id),
      storeDeadLetter: async () => undefined,
    };
    const leases = new TaskLeases(port, { signer: new ReceiptSigner(), log });
    const caller = { identity: "w1", allows: () => true };
    const tasks = await leases.reserve(record.id, 1, caller, gone.signal);
    expect(tasks).toEqual([]);
    expect(late.notAfters[0]).toBeTypeOf("number");
    expect(late.second()?.info.deliveryCount).toBe(2);
    expect(await late.thirdWhileKept()).toBeNull();
  } finally {
    await raw.close();
    await broker.close();
    await core.stop();
    await proxy.close();
    await server.dispose();
  }
}, 60_000);
