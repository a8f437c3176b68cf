/**
 * A settle of the HTTP pull API decided within a delivery's lease, whose
 * connection is lost just then: it waits for the connection (up to the
 * operation's deadline), the lease ends meanwhile at the server, and the
 * task goes to another worker. Sent then, the nak named the task's stream
 * sequence and handed the other worker's delivery back: a third worker got
 * the task while the second ran it. Through `createHttpApi`, as users run
 * it (a first test through a port made by hand passed while the API's own
 * port dropped the bound: a review). Only this instance's connection is cut
 * (a TCP proxy); the oracle is the server's deliveries, pulled raw.
 */
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import { partsOf } from "../../src/api/runtime.ts";
import { createHttpApi, createRuntime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { postJson } from "../harness/http-server.ts";
import { lateNaks } from "../harness/late-naks.ts";
import { startNatsServer } from "../harness/nats-server.ts";
import { tcpProxy } from "../harness/tcp-proxy.ts";

const TOKEN = "token-alice-0123456789";

it("a settle whose connection came back after the delivery's lease is not sent: the next holder keeps the task", async () => {
  const server = await startNatsServer();
  const proxy = await tcpProxy(server.url);
  const rt = await createRuntime({
    servers: proxy.url,
    logger: silentLogger(),
    jobs: { lane: false },
    connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
  });
  const raw = await connect({ servers: server.url });
  try {
    const api = createHttpApi(rt, { tokens: { [TOKEN]: "alice" } });
    const call = (path: string, body: unknown) =>
      postJson<{ tasks: Array<{ receipt: string }> }>(api, TOKEN, path, body);
    const job = await rt.jobs.submit<{ n: number }, string>({
      queue: "late",
      tasks: [{ n: 0 }],
      ackWaitMs: 2000,
      maxDeliver: 5,
      backoff: [0],
      maxFailures: 1,
    });
    const leasing = partsOf(rt).broker.taskLeasing;
    const consumer = await jetstream(raw).consumers.get("jetstate_tasks_late", job.id);
    const late = lateNaks(
      leasing.settle.bind(leasing),
      proxy,
      () => rt.connection.state === "connected",
      consumer,
    );
    leasing.settle = late.settle;
    const reserved = await call(`/jobs/${job.id}/tasks`, { batch_size: 1 });
    expect(reserved.status).toBe(200);
    const [task] = reserved.json.tasks;
    const answer = await call(`/jobs/${job.id}/results`, {
      results: [{ receipt: task?.receipt, error: { message: "busy" } }],
    });
    // Not sent, and said so: the worker tries again, and is told the lease is over.
    expect(answer.status).toBe(503);
    expect(late.second()?.info.deliveryCount).toBe(2);
    // With the nak sent late, the server hands the second holder's delivery out again.
    expect(await late.thirdWhileKept()).toBeNull();
    expect(late.notAfters[0]).toBeTypeOf("number");
  } finally {
    await raw.close();
    await rt.stop();
    await proxy.close();
    await server.dispose();
  }
}, 60_000);
