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
import { type HeldAnswer, type HeldTask, moversInFlight } from "../../src/adapters/delayed-tasks.ts";
import { dueAckWaitMs } from "../../src/adapters/nats/delayed-tasks.ts";
import { createNatsBroker, type NatsBroker } from "../../src/adapters/nats/nats-broker.ts";
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

/**
 * A broker of its own (prefix `prefix`) with a delayed job of `total` tasks held for a minute;
 * after `body`, the movers it started (`mover`) are stopped and waited for.
 */
const withHeldJob = async (
  prefix: string,
  total: number,
  body: (
    broker: NatsBroker,
    mover: (onHeld: (task: HeldTask) => Promise<HeldAnswer>) => void,
  ) => Promise<void>,
) => {
  const core = await createRuntimeCore({ servers: server.url, logger: silentLogger(), prefix });
  const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: `${prefix}-a` });
  const stop = new AbortController();
  try {
    const record = { ...newRecord(total, 300), runAt: Date.now() + 60_000 };
    const held = taskBodies(total).map((text, n) => ({
      dueAt: record.runAt,
      msgId: heldMsgId(record.id, record.submitId, n),
      body: text,
    }));
    await broker.createRecord(record);
    await broker.holdTasks(record, held, stop.signal);
    const movers: Promise<void>[] = [];
    try {
      await body(broker, (onHeld) => movers.push(broker.consumeHeld(record.queue, onHeld, stop.signal)));
    } finally {
      stop.abort();
      await Promise.all(movers);
    }
  } finally {
    stop.abort();
    await core.stop();
  }
};

it("a delivery handled for longer than the ack wait stays with its mover", { timeout: 30_000 }, async () => {
  await withHeldJob("slow", 1, async (_broker, mover) => {
    let handing = 0;
    let answered = false;
    mover(async () => {
      handing++;
      // A record read and a publish slowed down past the ack wait (an election, a loaded server).
      await delay(dueAckWaitMs + 2000);
      answered = true;
      return { kind: "later", ms: 60_000 };
    });
    await waitUntil(() => handing === 1, { timeoutMs: 5000, message: "the first mover handed the task" });
    let second = 0;
    mover(async () => {
      second++;
      return { kind: "later", ms: 60_000 };
    });
    await waitUntil(() => answered, { timeoutMs: dueAckWaitMs + 5000, message: "the first mover's answer" });
    expect(second).toBe(0);
    expect(handing).toBe(1);
  });
});

it("a mover busy with as many deliveries as it handles at once is sent no more: none outwaits the ack wait in its buffer", {
  timeout: 40_000,
}, async () => {
  // 256 tasks, each handled for 2 s, 64 at once: pulled 256 at a time, the last 64 waited 6 s in
  // the first mover's buffer, past the 5-s ack wait, and the server handed them to the second
  // mover too (each handled twice; the publish of a due one lands once, but the record read and
  // the publish were repeated).
  await withHeldJob("busy", 256, async (_broker, mover) => {
    const handed = new Map<string, number>();
    const slow = async (task: HeldTask): Promise<HeldAnswer> => {
      handed.set(task.msgId, (handed.get(task.msgId) ?? 0) + 1);
      await delay(2000);
      return { kind: "later", ms: 60_000 };
    };
    mover(slow);
    await waitUntil(() => handed.size >= moversInFlight, {
      timeoutMs: 5000,
      message: "the first mover handling as many as it handles at once",
    });
    mover(slow);
    await waitUntil(() => handed.size === 256, {
      timeoutMs: 25_000,
      message: () => `every task handed (${handed.size} of 256)`,
    });
    // Past the ack wait of the last ones handed: one given to another mover meanwhile shows.
    await delay(dueAckWaitMs);
    expect([...handed.values()].filter((times) => times > 1)).toEqual([]);
  });
});
