import {
  DiscardPolicy,
  JetStreamApiError,
  JetStreamError,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import {
  ClosedConnectionError,
  connect,
  headers,
  type NatsConnection,
  PermissionViolationError,
  TimeoutError,
} from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { classifyNatsError } from "../../src/adapters/nats/classify-error.ts";
import { PubAcks } from "../../src/adapters/nats/pub-acks.ts";
import { type PipelinedPublish, publishPipelined } from "../../src/adapters/nats/publish-pipelined.ts";
import { type AuthFiles, authFiles } from "../harness/nats-auth.ts";
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

  const publish = (
    over: Partial<PipelinedPublish> & Pick<PipelinedPublish, "subject" | "bodies">,
    acks = new PubAcks(nc, 2000),
  ) =>
    publishPipelined(acks, {
      msgId: (n) => `id.${n}`,
      window: 16,
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
    // The name a setup gone missing is told by (client-setups.ts): it was "JetStreamError" before.
    expect((error as Error).name).toBe((viaJs as Error).name);
    expect(classifyNatsError(error, "publish")._tag).toBe(classifyNatsError(viaJs, "publish")._tag);
  });

  it("no PubAck within the PubAck timeout: a TimeoutError (outcome unknown, retried by the caller)", async () => {
    // A plain subscriber takes the messages and never answers.
    const silent = nc.subscribe("silent.>");
    try {
      const error = await publish({ subject: "silent.a", bodies: bodies(3) }, new PubAcks(nc, 200)).catch(
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

  it("one reply subscription per client, whatever the publishes: none made and dropped per batch", async () => {
    // The server's own count of this client's subscriptions (its monitoring endpoint), as the oracle.
    const own = await connect({ servers: server.url, name: "subs-counted" });
    const subscriptions = async () => {
      const connz = (await (await fetch(`${server.monitorUrl}/connz?subs=1`)).json()) as {
        connections: Array<{ name?: string; subscriptions?: number }>;
      };
      const mine = connz.connections.find((c) => c.name === "subs-counted");
      if (!mine) throw new Error("the test's connection is not in /connz");
      // Left out of the answer when 0.
      return mine.subscriptions ?? 0;
    };
    const before = await subscriptions();
    const acks = new PubAcks(own, 2000);
    const counts: number[] = [];
    // A SUB reaches the server before the publishes that follow it; a client's PING flushes both.
    await Promise.all(
      Array.from({ length: 20 }, (_, k) =>
        publishPipelined(acks, {
          subject: `ok.subs.${k}`,
          bodies: bodies(3),
          msgId: (n) => `subs.${k}.${n}`,
          window: 2,
          signal: new AbortController().signal,
        }).then(async () => {
          if (k % 5 === 0) counts.push(await subscriptions());
        }),
      ),
    );
    await own.flush();
    expect(await subscriptions()).toBe(before + 1);
    expect(Math.max(...counts)).toBe(before + 1);
    await own.close();
  });

  it("PubAcks: a compare-and-set on the subject's last sequence answers as kv.update does; a close fails what waits", async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "cas", subjects: ["cas.>"] });
    const acks = new PubAcks(nc, 2000);
    const cas = (previous: number) => {
      const h = headers();
      h.set("Nats-Expected-Last-Subject-Sequence", String(previous));
      return acks.publish("cas.k", "v", h);
    };
    const first = await cas(0);
    expect(first).toMatchObject({ stream: "cas", seq: 1, duplicate: false });
    expect((await cas(first.seq)).seq).toBe(2);
    const stale = await cas(first.seq).catch((e: unknown) => e);
    expect(stale).toBeInstanceOf(JetStreamApiError);
    expect((stale as JetStreamApiError).code).toBe(10071);

    // A client closed while a PubAck is awaited: it fails at once, and so does every publish after.
    const closing = await connect({ servers: server.url });
    const doomed = new PubAcks(closing, 60_000);
    const silent = nc.subscribe("silent.close");
    await nc.flush();
    const waiting = doomed.publish("silent.close", "x").catch((e: unknown) => e);
    await closing.flush();
    await closing.close();
    expect(await waiting).toBeInstanceOf(ClosedConnectionError);
    expect(await doomed.publish("ok.after", "x").catch((e: unknown) => e)).toBeInstanceOf(
      ClosedConnectionError,
    );
    silent.unsubscribe();
  });
});

describe("PubAcks against a server that refuses a subject", () => {
  let server: NatsServerHandle;
  let files: AuthFiles;
  let nc: NatsConnection;
  beforeAll(async () => {
    files = await authFiles();
    // A user who may publish anywhere but `deny.>`; JetStream, inboxes and the rest allowed.
    // And one who may not subscribe to inboxes: no PubAck can reach it.
    const config = `authorization { users: [ { user: "u", password: "p", permissions: { publish: { allow: [">"], deny: ["deny.>"] } } }, { user: "nosub", password: "p", permissions: { subscribe: { deny: ["_INBOX.>"] } } } ] }\n`;
    server = await startNatsServer({ args: ["-c", await files.file("deny.conf", config)] });
    nc = await connect({ servers: server.url, user: "u", pass: "p", noAsyncTraces: true });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "denied", subjects: ["deny.>"] });
    await jsm.streams.add({ name: "fine", subjects: ["fine.>"] });
  });
  afterAll(async () => {
    await nc?.close();
    await server?.dispose();
    await files?.remove();
  });

  it("a refused publish fails at once with the permission error, classified as js.publish()'s (permanent)", async () => {
    const acks = new PubAcks(nc, 10_000);
    const started = Date.now();
    const error = await acks.publish("deny.a", "x").catch((e: unknown) => e);
    const tookMs = Date.now() - started;
    const viaJs = await jetstream(nc)
      .publish("deny.b", "x")
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PermissionViolationError);
    expect(classifyNatsError(error, "publish")._tag).toBe("PermanentBrokerError");
    expect(classifyNatsError(viaJs, "publish")._tag).toBe("PermanentBrokerError");
    // Not the PubAck timeout: the server's refusal came back on the client's status.
    expect(tookMs).toBeLessThan(5000);
    // Other publishes on the same client are not failed by it.
    expect(await acks.publish("fine.a", "x")).toMatchObject({ stream: "fine", seq: 1 });
  });

  it("a reply subscription the server refuses breaks that PubAcks (its owner makes another); a close does not", async () => {
    const refused = await connect({ servers: server.url, user: "nosub", pass: "p" });
    const acks = new PubAcks(refused, 10_000);
    const error = await acks.publish("fine.b", "x").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PermissionViolationError);
    expect(acks.broken).toBe(true);
    await refused.close();

    const closing = await connect({ servers: server.url, user: "u", pass: "p" });
    const fine = new PubAcks(closing, 10_000);
    await closing.close();
    expect(await fine.publish("fine.c", "x").catch((e: unknown) => e)).toBeInstanceOf(ClosedConnectionError);
    expect(fine.broken).toBe(false);
  });

  it("PubAcks.request: a stream purge answers as jsm.streams.purge does, its refusal the same JetStreamApiError", async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "purged", subjects: ["purged.>"] });
    const js = jetstream(nc);
    for (const subject of ["purged.a", "purged.a", "purged.b"]) await js.publish(subject, "x");
    const acks = new PubAcks(nc, 2000);
    const answer = await acks.request<{ success: boolean; purged: number }>("$JS.API.STREAM.PURGE.purged", {
      filter: "purged.a",
    });
    expect(answer).toMatchObject({ success: true, purged: 2 });
    // The stream itself says what is left: purged.b only.
    const info = await jsm.streams.info("purged", { subjects_filter: ">" });
    expect(info.state.subjects).toEqual({ "purged.b": 1 });
    const refused = await acks.request("$JS.API.STREAM.PURGE.nosuchstream", {}).catch((e: unknown) => e);
    const raised = await jsm.streams.purge("nosuchstream").catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(JetStreamApiError);
    expect((refused as JetStreamApiError).code).toBe((raised as JetStreamApiError).code);
    expect(classifyNatsError(refused, "purge")._tag).toBe(classifyNatsError(raised, "purge")._tag);
  });
});
