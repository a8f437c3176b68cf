/**
 * A flow submitted without an id whose record's create reached the server
 * (stored) while its answer did not, and whose connection stays deaf longer
 * than the create's deadline and the read-back (~1.5 s of retries): the
 * submit rejects with the create's `OperationTimeout` ("outcome unknown"),
 * which names no flow. The flow was made, so another runtime's sweep drives
 * it: every child and the parent run. The caller, told its submit failed and
 * never told the id, can neither follow nor cancel it, and a retry submits a
 * second flow: the "orphan parent job after a failed submit" of the field.
 * Expected: a rejection for a flow that may exist names it (its id, as the
 * `RuntimeStopped` of a runtime stopped under the write does), or nothing of
 * it runs. Review test. Oracles: the flows bucket read raw (a nats.js client
 * of the test's own) and the handlers' ledger.
 *
 * The connection is deafened by the harness's TCP proxy: bytes from the
 * client still reach the server, the server's answers are dropped (as a
 * connection cut just after the create went out, and down for longer than
 * the deadline). It is cut for good afterwards, so the client reconnects.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { liveKeys } from "../harness/kv-keys.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { tcpProxy } from "../harness/tcp-proxy.ts";
import { waitUntil } from "../harness/wait.ts";

let nats: NatsServerHandle;
let nc: NatsConnection;
let proxy: Awaited<ReturnType<typeof tcpProxy>>;
const runtimes: Runtime[] = [];
beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  proxy = await tcpProxy(nats.url);
});
afterAll(async () => {
  proxy?.reset();
  for (const rt of runtimes.splice(0)) await rt.stop();
  await proxy?.close();
  await nc?.close();
  await nats?.dispose();
});

const prefix = "lostlong";

it("a submit rejected while its flow was made names the flow, or nothing of it runs", async () => {
  // A: submits through the proxy. B: on the server directly, works and drives (its sweep).
  const a = await createRuntime({
    logger: silentLogger(),
    servers: proxy.url,
    name: "a",
    prefix,
    roles: ["submitter"],
    connection: { operationTimeoutMs: 1500 },
  });
  runtimes.push(a);
  const b = await createRuntime({ logger: silentLogger(), servers: nats.url, name: "b", prefix });
  runtimes.push(b);
  const ledger: string[] = [];
  for (const queue of ["count", "sum"])
    b.workers.start({
      queue,
      concurrency: 4,
      handler: (task) => {
        ledger.push(`${queue}:${task.jobId}`);
        return "ok";
      },
    });
  // The bucket exists before the cut (a first flow's submit makes it).
  await (
    await b.flows.submit({
      parent: { queue: "sum", tasks: [{}] },
      children: [{ queue: "count", tasks: [1] }],
    })
  ).done();
  ledger.length = 0;
  const before = new Set(await liveKeys(nc, brokerNames(prefix).flowsBucket));

  // The create goes out, then the server's answers are lost.
  const flows = partsOf(a).broker.flows;
  const create = flows.createFlow.bind(flows);
  (flows as { createFlow: typeof flows.createFlow }).createFlow = (record) => {
    proxy.drop("fromServer");
    return create(record);
  };

  const outcome = await a.flows
    .submit({
      parent: { queue: "sum", tasks: [{}] },
      children: [
        { queue: "count", tasks: [1] },
        { queue: "count", tasks: [2] },
      ],
    })
    .then(
      (handle) => ({ resolved: handle.id }),
      (error: unknown) => ({ rejected: error as Error }),
    );
  // A's connection is cut for good now: it reconnects, answers flow again.
  proxy.reset();

  // Raw: the flow A's submit made, if any.
  const made = (await liveKeys(nc, brokerNames(prefix).flowsBucket)).filter(
    (key) => !key.startsWith("live.") && !before.has(key),
  );
  if ("resolved" in outcome) {
    // Resolved: the caller has its handle; nothing to show.
    expect(made).toEqual([outcome.resolved]);
    return;
  }
  expect(made).toHaveLength(1);
  const flowId = made[0] as string;
  // B's sweep finds it and drives it: its three jobs run (the ledger).
  await waitUntil(() => ledger.filter((e) => e.startsWith("sum:")).length === 1, {
    timeoutMs: 15_000,
    message: () => `the made flow's parent ran (ledger ${JSON.stringify(ledger)})`,
  });
  expect({
    ranAfterRejectedSubmit: ledger.length,
    error: `${outcome.rejected.name}: ${outcome.rejected.message}`,
    errorNamesFlow: outcome.rejected.message.includes(flowId),
  }).toEqual({
    ranAfterRejectedSubmit: 3,
    error: expect.any(String),
    errorNamesFlow: true,
  });
}, 40_000);
