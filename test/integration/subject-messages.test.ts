import { AckPolicy, jetstream, jetstreamManager, RetentionPolicy } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { deleteSubjectMessages } from "../../src/adapters/nats/subject-messages.ts";
import { useServerConnection } from "../harness/server-connection.ts";

/**
 * `deleteSubjectMessages` (a lane job's tasks at its end, a job's held
 * tasks at a cancel) reads a message, then deletes it: a worker's ack off
 * the work-queue stream, or another runtime's delete, can take it between
 * the two. That is the outcome wanted, not a failure: the deletion goes on
 * with the next message. The oracle is the server's own count of the
 * subject's messages, read through the test's connection.
 */
describe("deleteSubjectMessages", () => {
  const served = useServerConnection();

  it("goes on past a message taken between its read and its delete (an ack off the work queue)", async () => {
    const jsm = await jetstreamManager(served.nc);
    const js = jetstream(served.nc);
    await jsm.streams.add({ name: "wq", subjects: ["wq.>"], retention: RetentionPolicy.Workqueue });
    await jsm.consumers.add("wq", {
      durable_name: "w",
      ack_policy: AckPolicy.Explicit,
      filter_subject: "wq.job",
    });
    await js.publish("wq.other", "kept");
    for (let i = 0; i < 4; i++) await js.publish("wq.job", `t${i}`);
    await js.publish("wq.other", "kept");
    const consumer = await js.consumers.get("wq", "w");
    const taken: number[] = [];
    // Every delete finds its message acked off the stream a moment before (the worker won).
    const racing = {
      ...jsm,
      streams: Object.assign(Object.create(Object.getPrototypeOf(jsm.streams)), jsm.streams, {
        deleteMessage: async (stream: string, seq: number, erase?: boolean) => {
          if (taken.length < 2) {
            const m = await consumer.next({ expires: 2_000 });
            if (!m) throw new Error("no task to take");
            await m.ackAck();
            taken.push(m.seq);
            expect(m.seq).toBe(seq);
          }
          return jsm.streams.deleteMessage(stream, seq, erase);
        },
      }),
    } as typeof jsm;
    await deleteSubjectMessages(racing, "wq", "wq.job", { max: 10 });
    expect(taken).toHaveLength(2);
    const info = await jsm.streams.info("wq", { subjects_filter: ">" });
    expect(info.state.subjects).toEqual({ "wq.other": 2 });
  });
});
