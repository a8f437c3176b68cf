/**
 * `rt.admin.diagnose()` (the CLI's `doctor`) on a fresh server after the
 * README's first job: no problem. The agents bucket is made only when an
 * agent is used, as the flows and schedules buckets are by their first flow
 * or schedule, the answers bucket by the HTTP API's first answer, the
 * permits stream by a queue's first limit and a queue's delayed stream by
 * its first delayed job; such a store missing is not in use yet, not a
 * problem.
 * `doctor` exited 5 there, "stream KV_jetstate_agents is missing". The
 * oracle: the server's own stream listing, read raw.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { within } from "../harness/wait.ts";

let server: NatsServerHandle;
let rt: Runtime;

beforeAll(async () => {
  server = await startNatsServer();
  rt = await createRuntime({ servers: server.url, logger: silentLogger() });
});
afterAll(async () => {
  await rt?.stop();
  await server?.dispose();
});

const streamsOnServer = async (): Promise<string[]> => {
  const nc = await connect({ servers: server.url });
  try {
    const names: string[] = [];
    for await (const name of (await jetstreamManager(nc)).streams.names()) names.push(name);
    return names;
  } finally {
    await nc.close();
  }
};

it("after the first job: no problem; a bucket made on first use and missing is not in use yet", async () => {
  const worker = rt.workers.start<number, number>({ queue: "detect", handler: (t) => t.payload });
  try {
    const job = await rt.jobs.submit<number, number>({ queue: "detect", tasks: [1] });
    expect(await within(job.done(), 10_000)).toMatchObject({ status: "succeeded" });
  } finally {
    await worker.stop();
  }
  const onServer = await streamsOnServer();
  const d = await rt.admin.diagnose();
  expect(d.problems).toEqual([]);
  const firstUse = [
    "KV_jetstate_agents",
    "KV_jetstate_queues",
    "KV_jetstate_flows",
    "KV_jetstate_schedules",
    // The HTTP API's answers, the permits of queue limits, a queue's held tasks (a job with a delay).
    "KV_jetstate_answers",
    "jetstate_permits",
    "jetstate_delayed_detect",
  ];
  for (const name of firstUse) {
    const store = d.stores.find((s) => s.name === name);
    expect(store, name).toMatchObject({ present: onServer.includes(name), firstUse: expect.any(String) });
  }
  for (const name of firstUse.filter((f) => f !== "KV_jetstate_queues")) expect(onServer).not.toContain(name);
  // Made by the native worker's announcement (in server memory: an HTTP-only fleet or a restarted
  // server has none, doctor-presence.test.ts), so made on first use too, and there.
  expect(d.stores.find((s) => s.name === "KV_jetstate_presence")).toMatchObject({
    present: true,
    firstUse: expect.any(String),
  });
  // Every other store it checks is there, and none of them is made on first use.
  for (const s of d.stores.filter((s) => !firstUse.includes(s.name) && s.name !== "KV_jetstate_presence")) {
    expect(s.present, s.name).toBe(true);
    expect(s, s.name).not.toHaveProperty("firstUse");
  }
});

it("a bucket made on first use is checked as the others once it is there", async () => {
  await rt.agents.register({ agentId: "detector", targets: ["a", "b"], current: "a" });
  const d = await rt.admin.diagnose();
  expect(d.stores.find((s) => s.name === "KV_jetstate_agents")).toMatchObject({ present: true, replicas: 1 });
  expect(d.problems).toEqual([]);
});
