import {
  DiscardPolicy,
  JetStreamApiError,
  JetStreamError,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import { connect, type NatsConnection, TimeoutError } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { classifyNatsError } from "../../src/adapters/nats/classify-error.ts";
import { type PipelinedPublish, publishPipelined } from "../../src/adapters/nats/publish-pipelined.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

const bodies = (n: number) => Array.from({ length: n }, (_, i) => `{"i":${i}}`);

describe("publishPipelined (the submit's task publish)", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url, noAsyncTraces: true });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "ok", subjects: ["ok.>"], duplicate_window: 120e9 });
    await jsm.streams.add({ name: "small", subjects: ["small.>"], max_msgs: 5, discard: DiscardPolicy.New });
  });
  afterAll(async () => {
    await nc?.close();
    await server?.dispose();
  });

  const publish = (over: Partial<PipelinedPublish> & Pick<PipelinedPublish, "subject" | "bodies">) =>
    publishPipelined(nc, {
      msgId: (n) => `id.${n}`,
      window: 16,
      ackTimeoutMs: 2000,
      signal: new AbortController().signal,
      ...over,
    });

  it("stores every message once, with its id; a retry with the same ids adds nothing", async () => {
    await publish({ subject: "ok.a", bodies: bodies(1000) });
    await publish({ subject: "ok.a", bodies: bodies(1000) });
    const jsm = await jetstreamManager(nc);
    expect((await jsm.streams.info("ok")).state.messages).toBe(1000);
    const last = await jsm.streams.getMessage("ok", { last_by_subj: "ok.a" });
    expect(last?.header.get("Nats-Msg-Id")).toBe("id.999");
    expect(last?.string()).toBe(`{"i":999}`);
  });

  it("nothing to publish: resolves and stores nothing", async () => {
    const jsm = await jetstreamManager(nc);
    const before = (await jsm.streams.info("ok")).state.messages;
    await expect(publish({ subject: "ok.empty", bodies: [] })).resolves.toBeUndefined();
    const after = await jsm.streams.info("ok", { subjects_filter: "ok.empty" });
    expect(after.state.messages).toBe(before);
    expect(after.state.subjects?.["ok.empty"]).toBeUndefined();
  });

  it("a PubAck error is the JetStreamApiError js.publish() raises, classified alike", async () => {
    const error = await publish({ subject: "small.a", bodies: bodies(20) }).catch((e: unknown) => e);
    // The stream is full now: js.publish() meets the same refusal.
    const viaJs = await jetstream(nc)
      .publish("small.b", "x")
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(JetStreamApiError);
    expect(viaJs).toBeInstanceOf(JetStreamApiError);
    expect((error as JetStreamApiError).code).toBe((viaJs as JetStreamApiError).code);
    expect(classifyNatsError(error, "publish")._tag).toBe(classifyNatsError(viaJs, "publish")._tag);
  });

  it("no stream for the subject: 'jetstream is not enabled', classified as js.publish()'s error", async () => {
    const error = await publish({ subject: "nowhere.a", bodies: bodies(3) }).catch((e: unknown) => e);
    const viaJs = await jetstream(nc)
      .publish("nowhere.b", "x")
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(JetStreamError);
    expect((error as Error).message).toBe((viaJs as Error).message);
    expect(classifyNatsError(error, "publish")._tag).toBe(classifyNatsError(viaJs, "publish")._tag);
  });

  it("no PubAck within ackTimeoutMs: a TimeoutError (outcome unknown, retried by the caller)", async () => {
    // A plain subscriber takes the messages and never answers.
    const silent = nc.subscribe("silent.>");
    try {
      const error = await publish({ subject: "silent.a", bodies: bodies(3), ackTimeoutMs: 200 }).catch(
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(TimeoutError);
      expect(classifyNatsError(error, "publish")._tag).toBe("OperationTimeout");
    } finally {
      silent.unsubscribe();
    }
  });

  it("an aborted signal stops it with the signal's reason", async () => {
    const ac = new AbortController();
    const reason = new Error("stopping");
    ac.abort(reason);
    await expect(publish({ subject: "ok.b", bodies: bodies(10), signal: ac.signal })).rejects.toBe(reason);
  });
});
