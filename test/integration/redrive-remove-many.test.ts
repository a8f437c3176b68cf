/**
 * A redrive of thousands of dead tasks deletes their old messages first (a
 * lost term's message would otherwise bring a late dead answer): they were
 * looked up and deleted one round trip after another inside one operation
 * of the default deadline, and a redrive of ~10,000 tasks (12,000 at 1.5 s,
 * in a review) failed at every try, before its markers: it never went
 * through. The oracle: the tasks stream's count on the job's subject, read
 * raw.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { newRecord, taskBodies } from "../contract/contract-helpers.ts";
import { startNatsServer } from "../harness/nats-server.ts";

it("thousands of a job's task messages are deleted past the operation's deadline", async () => {
  const server = await startNatsServer();
  const core = await createRuntimeCore({
    servers: server.url,
    logger: silentLogger(),
    connection: { operationTimeoutMs: 1000 },
  });
  const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "remove-many" });
  const raw = await connect({ servers: server.url });
  try {
    const record = newRecord(6000, 30_000);
    await broker.createRecord(record);
    await broker.publishTasks(record, taskBodies(record.total), new AbortController().signal);
    const jsm = await jetstreamManager(raw);
    const stream = `jetstate_tasks_${record.queue}`;
    const subject = `jetstate.tasks.${record.queue}.${record.id}`;
    const stored = async () =>
      (await jsm.streams.info(stream, { subjects_filter: subject })).state.subjects?.[subject] ?? 0;
    expect(await stored()).toBe(6000);
    const { first_seq, last_seq } = (await jsm.streams.info(stream)).state;
    // Published in order on a stream of its own: task k at the k-th sequence.
    const tasks = Array.from({ length: last_seq - first_seq + 1 }, (_, k) => ({
      seq: first_seq + k,
      index: k,
    }));
    await broker.removeTaskMessages(record, tasks);
    expect(await stored()).toBe(0);
  } finally {
    await raw.close();
    await broker.close();
    await core.stop();
    await server.dispose();
  }
}, 60_000);
