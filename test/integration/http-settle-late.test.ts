/**
 * A settle of the HTTP pull API decided within a delivery's lease, whose
 * connection is lost just then: it waits for the connection (up to the
 * operation's deadline), the lease ends meanwhile at the server, and the
 * task goes to another worker. Sent then, the nak named the task's stream
 * sequence and handed the other worker's delivery back: a third worker got
 * the task while the second ran it. Only this instance's connection is cut
 * (a TCP proxy); the oracle is the server's own deliveries, pulled raw.
 */
import { type JsMsg, jetstream } from "@nats-io/jetstream";
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
import { startNatsServer } from "../harness/nats-server.ts";
import { tcpProxy } from "../harness/tcp-proxy.ts";
import { delay, waitUntil } from "../harness/wait.ts";

it("a settle whose connection came back after the delivery's lease is not sent: the next holder keeps the task", async () => {
  const log = silentLogger();
  const server = await startNatsServer();
  const proxy = await tcpProxy(server.url);
  const core = await createRuntimeCore({
    servers: proxy.url,
    logger: log,
    connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
  });
  const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "late-settle" });
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
    let second = null as JsMsg | null;
    const port: LeasePort = {
      getRecord: (id) => broker.getRecord(id),
      activeJobs: async () => [],
      fetchTasks: (q, j, m, pulling) => leasing.fetchTasks(q, j, m, pulling),
      fetchLane: (q, m, pulling) => leasing.fetchLane(q, m, pulling),
      isDeliveryOf: (ref, job) => leasing.isDeliveryOf(ref, job),
      settle: async (settles, notAfter) => {
        if (!settles.some((s) => s.action === "nak")) return leasing.settle(settles, notAfter);
        // The connection drops just as the nak is to be sent.
        proxy.cut();
        await waitUntil(() => core.connection.state !== "connected", { timeoutMs: 5000, message: "cut" });
        const sent = leasing.settle(settles, notAfter);
        // Meanwhile the lease (2 s) ends at the server, and another worker gets the task.
        await delay(2500);
        second = await consumer.next({ expires: 3000 });
        second?.working();
        proxy.restore();
        await sent;
      },
      claimAnswer: (ref, digest) => leasing.claimAnswer(ref, digest),
      answerOf: (ref) => leasing.answerOf(ref),
      recordAnswer: (ref, answer, revision) => leasing.recordAnswer(ref, answer, revision),
      releaseAnswer: (ref, revision) => leasing.releaseAnswer(ref, revision),
      publishResults: (q, j, body, id) => broker.publishResults(q, j, body, id),
      storeDeadLetter: async () => undefined,
    };
    const leases = new TaskLeases(port, { signer: new ReceiptSigner(), log });
    const caller = { identity: "w1", allows: () => true };
    const [task] = await leases.reserve(record.id, 1, caller);
    // Not sent, and said so: the worker's POST fails, and tried again it is told the lease is over.
    await expect(
      leases.submitResults(
        record.id,
        [{ receipt: task!.receipt, ok: false, message: "busy", permanent: false }],
        caller,
      ),
    ).rejects.toMatchObject({ _tag: "ConnectionUnavailable" });
    expect(second?.info.deliveryCount).toBe(2);
    // The second holder keeps its delivery (as a live worker does): nobody else gets the task.
    const keeping = setInterval(() => second?.working(), 500);
    try {
      expect(await consumer.next({ expires: 2500 })).toBeNull();
    } finally {
      clearInterval(keeping);
    }
  } finally {
    await raw.close();
    await broker.close();
    await core.stop();
    await proxy.close();
    await server.dispose();
  }
}, 60_000);
