/**
 * Two instances of the HTTP pull API whose hosts' clocks agree, but whose
 * readings of the server's clock do not: instance B read it through a link
 * on which the server stamps a minute behind what instance A read (a
 * cluster's meta leader failed over to a node whose clock is a minute
 * behind, or the server host's clock stepped back, after A read it; A keeps
 * its reading up to 5 minutes and drops it on no reconnect). JetStream's ack
 * wait is a duration on the consumer's leader and moves with neither stamp.
 * A worker reserves a task through A, its lease runs out on the server and
 * the task goes to a second worker; the first one's heartbeat and result
 * then reach B. The link is a proxy that shifts every `"created"` stamp the
 * server sends to B's connection a minute back (same length, nothing else
 * touched). The oracles read the server raw through the test's own
 * connection: the consumer's deliveries, every publish to the tasks
 * stream's ack subjects, the results stored.
 */
import net from "node:net";
import {
  type ConsumerInfo,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstreamManager,
} from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createHttpApi, createRuntime, type Runtime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type ServedApp, serveOnLoopback } from "../harness/http-server.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsRawResults } from "../harness/raw-results.ts";
import { waitUntil } from "../harness/wait.ts";

const ALICE = "token-alice-0123456789";
const BOB = "token-bob-0123456789ab";
const SECRET = "a-receipt-secret-of-at-least-32-bytes";
const minute = 60_000;

interface Task {
  readonly receipt: string;
  readonly attempt: number;
}

/**
 * A proxy in front of `target` whose server→client bytes carry every
 * `"created":"<RFC 3339>"` stamp `shiftMs` off (the fraction kept as sent,
 * so every length and byte count stays), counting the stamps it shifted.
 */
const stampShiftingProxy = async (target: string, shiftMs: number) => {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  let shifted = 0;
  const shift = (chunk: Buffer) =>
    Buffer.from(
      chunk
        .toString("latin1")
        .replace(/"created":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)/g, (_all, wall: string) => {
          shifted += 1;
          return `"created":"${new Date(Date.parse(`${wall}Z`) + shiftMs).toISOString().slice(0, 19)}`;
        }),
      "latin1",
    );
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    client.on("data", (chunk: Buffer) => upstream.destroyed || upstream.write(chunk));
    upstream.on("data", (chunk: Buffer) => client.destroyed || client.write(shift(chunk)));
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    url: `nats://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    shifted: () => shifted,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
};

/** A POST over the wire, as a remote worker makes it: its status and JSON answer. */
const post = async (app: ServedApp, token: string, path: string, body: unknown) => {
  const res = await fetch(`${app.baseUrl}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
};

/** Every publish to the queue's tasks stream's ack subjects (+ACK, -NAK, +WPI, +TERM), whoever sends it. */
const ackSubjects = async (nc: NatsConnection, queue: string) => {
  const seen: string[] = [];
  const sub = nc.subscribe(`$JS.ACK.${brokerNames("jetstate").tasksStream(queue)}.>`, {
    callback: (_error, m) => {
      seen.push(m.string());
    },
  });
  await nc.flush();
  return { seen, stop: () => sub.unsubscribe() };
};

describe("a receipt posted to an instance whose reading of the server's clock disagrees with the leasing one's", () => {
  let server: NatsServerHandle;
  let raw: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    raw = await connect({ servers: server.url, name: "raw-oracle" });
  });
  afterAll(async () => {
    await raw?.close();
    await server?.dispose();
  });

  it("the answering instance read a server clock a minute behind: a receipt past its lease on the server settles nothing", async () => {
    const queue = "stamps-apart";
    const proxy = await stampShiftingProxy(server.url, -minute);
    const runtimes: Runtime[] = [];
    const apps: ServedApp[] = [];
    const instance = async (name: string, servers: string) => {
      const rt = await createRuntime({
        servers,
        name,
        logger: silentLogger(),
        jobs: { lane: false, cleanupIntervalMs: 0 },
      });
      runtimes.push(rt);
      const tokens = { [ALICE]: "alice", [BOB]: "bob" };
      const app = await serveOnLoopback(createHttpApi(rt, { tokens, receiptSecret: SECRET }).fetch);
      apps.push(app);
      return { rt, app };
    };
    let acks: Awaited<ReturnType<typeof ackSubjects>> | undefined;
    try {
      const a = await instance("a", server.url);
      const b = await instance("b", proxy.url);
      const job = await a.rt.jobs.submit({
        queue,
        tasks: ["work"],
        ackWaitMs: 4000,
        maxDeliver: 5,
        stallAfterMs: minute,
      });
      const consumer = async (): Promise<ConsumerInfo> =>
        (await jetstreamManager(raw)).consumers.info(brokerNames("jetstate").tasksStream(queue), job.id);
      const reserve = async (token: string): Promise<Task> => {
        let got: Task | undefined;
        await waitUntil(
          async () => {
            const res = await post(a.app, token, `/jobs/${job.id}/tasks`, { batch_size: 1 });
            got = (res.json.tasks as Task[] | undefined)?.[0];
            return got !== undefined;
          },
          { timeoutMs: 30_000, intervalMs: 200, message: `a task reserved by ${token}` },
        );
        return got as Task;
      };
      const alice = await reserve(ALICE);
      // Alice's lease runs out on the server: the task is delivered again, to Bob.
      const bob = await reserve(BOB);
      const handedOver = await consumer();
      expect([alice.attempt, bob.attempt]).toEqual([1, 2]);
      expect([handedOver.delivered.consumer_seq, handedOver.num_ack_pending]).toEqual([2, 1]);

      acks = await ackSubjects(raw, queue);
      // Alice, late, through B: her heartbeat, then her result.
      const beat = await post(b.app, ALICE, `/jobs/${job.id}/heartbeat`, { receipts: [alice.receipt] });
      const answer = await post(b.app, ALICE, `/jobs/${job.id}/results`, {
        results: [{ receipt: alice.receipt, result: "alice's" }],
      });
      await raw.flush();
      // B's reading of the server's clock came through the proxy: the stamps were shifted.
      expect(proxy.shifted()).toBeGreaterThan(0);
      const stillHeld = await consumer().catch((error: unknown) => {
        if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.ConsumerNotFound)
          return { num_ack_pending: "consumer gone" };
        throw error;
      });
      expect({
        heartbeat: beat.status,
        answer: answer.status,
        sent: [...acks.seen],
        bobsDeliveryUnanswered: stillHeld.num_ack_pending ?? 0,
        stored: await natsRawResults(raw, queue, job.id),
      }).toEqual({ heartbeat: 410, answer: 410, sent: [], bobsDeliveryUnanswered: 1, stored: [] });
    } finally {
      acks?.stop();
      for (const app of apps) await app.close();
      for (const rt of runtimes) await rt.stop();
      await proxy.close();
    }
  }, 120_000);
});
