/**
 * 10,000 live jobs in one runtime, on both brokers: one-task jobs on the lane
 * are all submitted before any worker runs (so all are live at once, each a
 * job actor with its lease), then a worker runs them. Every job must end
 * `succeeded`, every task run once. The oracles are the handler's ledger of
 * the payloads it ran and, on NATS, the server's own view read with a
 * connection of the test's own: the consumers on the queue's tasks stream
 * (none per job) and the leases bucket (no job's key left once all ended).
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { createRuntime, type JobHandle, type Runtime } from "../../src/index.ts";
import { createTestRuntime } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const jobs = 10_000;
const inFlight = 64;

describe.each(["nats", "memory"])(`${jobs} live jobs in one runtime on the %s broker`, (broker) => {
  let server: NatsServerHandle | undefined;
  let nc: NatsConnection | undefined;
  let rt: Runtime | undefined;

  afterAll(async () => {
    await rt?.stop();
    await nc?.close();
    await server?.dispose();
  });

  it(`${jobs} one-task jobs submitted before any worker runs: all succeed, each task run once`, async () => {
    if (broker === "nats") {
      server = await startNatsServer();
      nc = await connect({ servers: server.url, name: "oracle" });
      rt = await createRuntime({ servers: server.url, logger, jobs: { lane: true } });
    } else {
      rt = await createTestRuntime({ logger, jobs: { lane: true } });
    }
    const runtime = rt;
    const handles: JobHandle<number>[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (next < jobs) {
          const n = next++;
          handles.push(await runtime.jobs.submit<{ n: number }, number>({ queue: "live", tasks: [{ n }] }));
        }
      }),
    );
    expect(handles.filter((h) => h.snapshot().status !== "running")).toEqual([]);

    if (nc) {
      // No consumer per job: the lane serves them all.
      const jsm = await jetstreamManager(nc);
      const consumers = await jsm.consumers.list("jetstate_tasks_live").next();
      expect(consumers.map((c) => c.name)).toEqual(["lane"]);
    }

    const ran = new Map<number, number>();
    const worker = runtime.workers.start<{ n: number }, number>({
      queue: "live",
      concurrency: inFlight,
      handler: (task) => {
        ran.set(task.payload.n, (ran.get(task.payload.n) ?? 0) + 1);
        return task.payload.n;
      },
    });
    const ends = await Promise.all(handles.map((h) => h.done()));
    await worker.stop();

    const statuses = new Map<string, number>();
    for (const end of ends) statuses.set(end.status, (statuses.get(end.status) ?? 0) + 1);
    expect(Object.fromEntries(statuses)).toEqual({ succeeded: jobs });
    expect(ran.size).toBe(jobs);
    expect([...ran].filter(([, times]) => times !== 1)).toEqual([]);

    if (nc) {
      // Every lease went with its job's end: only the runtime's heartbeat is left.
      const jsm = await jetstreamManager(nc);
      await waitUntil(
        async () => {
          const info = await jsm.streams.info("KV_jetstate_leases", {
            subjects_filter: "$KV.jetstate_leases.>",
          });
          return Object.keys(info.state.subjects ?? {}).every((s) => s.includes(".heartbeat."));
        },
        { timeoutMs: 10_000, message: "every job's lease gone" },
      );
    }
  }, 240_000);
});
