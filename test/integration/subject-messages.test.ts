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
    let racedFor = 0;
    // The first two deletes find their message acked off the stream a moment before (the worker won).
    const racing = {
      ...jsm,
      streams: Object.assign(Object.create(Object.getPrototypeOf(jsm.streams)), jsm.streams, {
        deleteMessage: async (stream: string, seq: number, erase?: boolean) => {
          // Counted at the call: the deletions are out together, each before the one before it is answered.
          if (racedFor++ < 2) {
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

  /** The stream's manager with `deleteMessage` wrapped (the rest as nats.js has it). */
  const withDelete = (
    jsm: Awaited<ReturnType<typeof jetstreamManager>>,
    deleteMessage: (stream: string, seq: number, erase?: boolean) => Promise<boolean>,
  ) =>
    ({
      ...jsm,
      streams: Object.assign(Object.create(Object.getPrototypeOf(jsm.streams)), jsm.streams, {
        deleteMessage,
      }),
    }) as typeof jsm;

  it("has its deletions out together, not one after the other; every one answered when it resolves", async () => {
    const jsm = await jetstreamManager(served.nc);
    const js = jetstream(served.nc);
    await jsm.streams.add({ name: "many", subjects: ["many.>"] });
    for (let i = 0; i < 200; i++) await js.publish(i % 2 === 0 ? "many.job" : "many.other", `${i}`);
    let out = 0;
    let most = 0;
    const slow = withDelete(jsm, async (stream, seq, erase) => {
      out += 1;
      most = Math.max(most, out);
      try {
        await new Promise((resolve) => setTimeout(resolve, 20));
        return await jsm.streams.deleteMessage(stream, seq, erase);
      } finally {
        out -= 1;
      }
    });
    await deleteSubjectMessages(slow, "many", "many.job", { max: 1000 });
    expect(out).toBe(0);
    // One after the other, a 20 ms delete each: 100 deletions would take 2 s and never overlap.
    expect(most).toBeGreaterThan(1);
    const info = await jsm.streams.info("many", { subjects_filter: ">" });
    expect(info.state.subjects).toEqual({ "many.other": 100 });
  });

  it("rejects with a deletion that failed, and leaves none of its deletions running", async () => {
    const jsm = await jetstreamManager(served.nc);
    const js = jetstream(served.nc);
    await jsm.streams.add({ name: "failing", subjects: ["failing.>"] });
    for (let i = 0; i < 20; i++) await js.publish("failing.job", `${i}`);
    let out = 0;
    const failing = withDelete(jsm, async (stream, seq, erase) => {
      out += 1;
      try {
        await new Promise((resolve) => setTimeout(resolve, 10));
        if (seq === 5) throw new Error("not permitted");
        return await jsm.streams.deleteMessage(stream, seq, erase);
      } finally {
        out -= 1;
      }
    });
    await expect(deleteSubjectMessages(failing, "failing", "failing.job", { max: 1000 })).rejects.toThrow(
      "not permitted",
    );
    expect(out).toBe(0);
    const info = await jsm.streams.info("failing", { subjects_filter: ">" });
    // Seq 5 stays; how many after it were read and deleted before the failure was heard varies.
    expect(info.state.subjects?.["failing.job"]).toBeGreaterThanOrEqual(1);
  });
});
