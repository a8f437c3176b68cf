/**
 * A queue's `due` consumer made by an older version (ack wait 30 s) gets the
 * current ack wait when a runtime sets the queue up: a delivery a stopping
 * mover drops comes back after it (adapters/nats/delayed-tasks.ts); and a
 * mover that takes longer than that over one delivery keeps it. NATS only
 * (the memory broker has no such consumer). Oracles: the consumer's config
 * read by the test's own nats.js client; what a second mover is handed.
 */
import { AckPolicy, DeliverPolicy, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { dueAckWaitMs } from "../../src/adapters/nats/delayed-tasks.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { heldMsgId } from "../../src/kernel/held-task.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { newRecord, taskBodies } from "../contract/contract-helpers.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";

let server: NatsServerHandle;
let raw: NatsConnection;
beforeAll(async () => {
  server = await startNatsServer();
  raw = await connect({ servers: server.url, name: "raw-due" });
});
afterAll(async () => {
  await raw?.close();
  await server?.dispose();
});

it("a due consumer with the old 30 s ack wait is shortened, its other settings kept", async () => {
  const jsm = await jetstreamManager(raw);
  const stream = "jetstate_delayed_older";
  await jsm.streams.add({
    name: stream,
    subjects: ["jetstate.delayed.older.*"],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
  });
  await jsm.consumers.add(stream, {
    durable_name: "due",
    ack_policy: AckPolicy.Explicit,
    ack_wait: 30_000 * 1e6,
    max_deliver: -1,
    max_ack_pending: 1_000_000,
    deliver_policy: DeliverPolicy.All,
  });
  const rt = await createRuntime({ servers: server.url, logger: silentLogger() });
  try {
    await rt.admin.provision(["older"]);
  } finally {
    await rt.stop();
  }
  const { config } = await jsm.consumers.info(stream, "due");
  expect(dueAckWaitMs).toBeLessThan(30_000);
  expect(config).toMatchObject({
    ack_wait: dueAckWaitMs * 1e6,
    ack_policy: AckPolicy.Explicit,
    max_deliver: -1,
    max_ack_pending: 1_000_000,
  });
});

it("a delivery handled for longer than the ack wait stays with its mover", { timeout: 30_000 }, async () => {
  const core = await createRuntimeCore({ servers: server.url, logger: silentLogger(), prefix: "slow" });
  const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "slow-a" });
  const stop = new AbortController();
  try {
    const record = { ...newRecord(1, 300), runAt: Date.now() + 60_000 };
    const [body = ""] = taskBodies(1);
    await broker.createRecord(record);
    await broker.holdTasks(
      record,
      [{ dueAt: record.runAt, msgId: heldMsgId(record.id, record.submitId, 0), body }],
      stop.signal,
    );
    let handing = 0;
    let answered = false;
    const first = broker.consumeHeld(
      record.queue,
      async () => {
        handing++;
        // A record read and a publish slowed down past the ack wait (an election, a loaded server).
        await delay(dueAckWaitMs + 2000);
        answered = true;
        return { kind: "later", ms: 60_000 };
      },
      stop.signal,
    );
    await waitUntil(() => handing === 1, { timeoutMs: 5000, message: "the first mover handed the task" });
    let second = 0;
    const other = broker.consumeHeld(
      record.queue,
      async () => {
        second++;
        return { kind: "later", ms: 60_000 };
      },
      stop.signal,
    );
    await waitUntil(() => answered, { timeoutMs: dueAckWaitMs + 5000, message: "the first mover's answer" });
    expect(second).toBe(0);
    expect(handing).toBe(1);
    stop.abort();
    await Promise.all([first, other]);
  } finally {
    stop.abort();
    await core.stop();
  }
});
