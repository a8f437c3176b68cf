/**
 * A held task on one queue's delayed stream whose message names another
 * queue (anyone allowed to publish held tasks of queue A, a user of A
 * alone, can write one) is never moved to that other queue: the mover took
 * the queue from the message, and a job of queue B ran a task that no
 * submit of B made, at an index the message chose. The oracles: B's
 * handler's ledger, and A's delayed stream read raw (the message handled:
 * gone from it).
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { heldMsgId } from "../../src/kernel/held-task.ts";
import { encodeHeld } from "../../src/kernel/wire.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { rawJobRecord } from "../harness/raw-job-records.ts";
import { useNatsRuntime } from "../harness/runtime.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");

describe("a held task naming another queue than its stream's", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  useNatsRuntime({ name: "mover", logger, jobs: { cleanupIntervalMs: 0, lane: false } }, (started) => {
    ({ server, rt } = started);
  });

  it("is never moved there: the other queue's job runs only its own tasks", async () => {
    // Queue A has a job held for an hour: this runtime's mover follows A's delayed stream.
    await rt.jobs.submit<string, string>({ queue: "A", tasks: ["later"], delayMs: 3_600_000 });
    const release = gate();
    const ran: string[] = [];
    const worker = rt.workers.start<string, string>({
      queue: "B",
      handler: async (task) => {
        ran.push(`${task.index}:${task.payload}`);
        await release.opened;
        return task.payload;
      },
    });
    const nc = await connect({ servers: server.url, name: "raw" });
    try {
      const job = await rt.jobs.submit<string, string>({ queue: "B", tasks: ["own"] });
      await waitUntil(() => ran.length === 1, { timeoutMs: 10_000, message: "B's own task running" });
      const record = await rawJobRecord(server.url, job.id);
      // On A's delayed subject, due now, naming B and B's running job, of its submit attempt.
      const held = encodeHeld("B", {
        dueAt: 0,
        msgId: heldMsgId(job.id, record!.submitId, 7),
        body: JSON.stringify({ i: 7, p: "injected" }),
      });
      const jsm = await jetstreamManager(nc);
      await (await import("@nats-io/jetstream"))
        .jetstream(nc)
        .publish(names.delayedSubject("A", job.id), held);
      const onA = async () =>
        (
          await jsm.streams.info(names.delayedStream("A"), {
            subjects_filter: names.delayedSubject("A", job.id),
          })
        ).state.subjects?.[names.delayedSubject("A", job.id)] ?? 0;
      await waitUntil(async () => (await onA()) === 0, {
        timeoutMs: 10_000,
        message: "the mover handled it",
      });
      // B's tasks stream, read raw: only the job's own task (held by its handler, not acked). A
      // task moved there is published before its held message leaves A's stream.
      expect((await jsm.streams.info(names.tasksStream("B"))).state.messages).toBe(1);
      release.open();
      expect(await within(job.done(), 10_000)).toMatchObject({ status: "succeeded", done: 1 });
      expect(ran).toEqual(["0:own"]);
    } finally {
      release.open();
      await nc.close();
      await worker.stop();
    }
  }, 60_000);
});
