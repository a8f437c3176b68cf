/**
 * One job record this version cannot read (a newer version's, say) while its
 * job holds a supervision lease, on both brokers (a real nats-server, and the
 * memory broker of `jetstate/testing`): HTTP workers of every other queue
 * are still served, and the dashboard still lists the other jobs. It was a
 * 500 on every `POST /queues/<any>/tasks` (the listing of the jobs that may
 * run read every leased record, all or nothing). The record is written past
 * jetstate: a raw KV put on NATS, the memory server's own store in memory.
 */

import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { jobBook } from "../../src/api/dashboard-streams.ts";
import { partsOf } from "../../src/api/runtime.ts";
import { createHttpApi, createRuntime, type JobHandle, type Runtime } from "../../src/index.ts";
import {
  createMemoryBroker,
  createMemoryServer,
  createTestRuntime,
  type MemoryServer,
} from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay } from "../harness/wait.ts";

const TOKEN = "token-unreadable-0123456789";
/** A record of a later version: `decodeRecord` refuses it ("unsupported job record version 2"). */
const newer = JSON.stringify({ v: 2, id: "jnewer", queue: "elsewhere" });

describe.each(["nats", "memory"])("a job record this version cannot read, on the %s broker", (broker) => {
  let server: NatsServerHandle | undefined;
  let memory: MemoryServer | undefined;
  let rt: Runtime;
  /** A job of another queue, submitted before the record is written (on NATS, the submit makes the buckets). */
  let served: JobHandle;
  const logs: { msg: string; level: number; [key: string]: unknown }[] = [];

  beforeAll(async () => {
    const logger = pino({ level: "info" }, { write: (line: string) => void logs.push(JSON.parse(line)) });
    const jobs = { cleanupIntervalMs: 0 };
    if (broker === "nats") {
      server = await startNatsServer();
      rt = await createRuntime({ servers: server.url, logger, jobs });
      served = await rt.jobs.submit({ queue: "served", tasks: [{ n: 0 }] });
      const nc = await connect({ servers: server.url, name: "raw-record" });
      try {
        await (await new Kvm(nc).open(brokerNames("jetstate").jobsBucket)).put("jnewer", newer);
      } finally {
        await nc.close();
      }
    } else {
      memory = createMemoryServer({ prefix: "jetstate" });
      rt = await createTestRuntime({ logger, broker: createMemoryBroker({ server: memory }), jobs });
      served = await rt.jobs.submit({ queue: "served", tasks: [{ n: 0 }] });
      memoryServerState(memory).records.create("test", "jnewer", newer);
    }
    // Its job is not over: it holds a supervision lease, as every job not over does.
    expect(await partsOf(rt).broker.leases.acquire("jnewer", 3600_000)).toBe(true);
  });

  afterAll(async () => {
    await rt?.stop();
    memory?.close();
    await server?.dispose();
  });

  const reserve = async (fetch: (request: Request) => Promise<Response>, queue: string) => {
    const response = await fetch(
      new Request(`http://test/queues/${queue}/tasks`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ batch_size: 5 }),
      }),
    );
    return { status: response.status, json: (await response.json()) as { tasks?: { job_id: string }[] } };
  };

  it("HTTP workers of the other queues are served; the record is said once at warn, not at every listing", async () => {
    // The reads of the unreadable record, counted: what tells a listing read it again.
    const broker = partsOf(rt).broker as unknown as { getRecord: (id: string) => unknown };
    const getRecord = broker.getRecord;
    let newerReads = 0;
    broker.getRecord = (id: string) => {
      if (id === "jnewer") newerReads++;
      return getRecord.call(partsOf(rt).broker, id);
    };
    try {
      const api = createHttpApi(rt, { tokens: { [TOKEN]: "box" } });
      // Before the fix: 500, on this queue as on every other.
      const first = await reserve(api.fetch, "served");
      expect(first).toMatchObject({ status: 200, json: { tasks: [{ job_id: served.id }] } });
      // The list of jobs is at most a second old: two more listings, each reading the record
      // again; every reservation meanwhile is served too.
      for (const listing of [1, 2]) {
        const before = newerReads;
        const deadline = Date.now() + 10_000;
        while (newerReads === before) {
          expect(Date.now(), `listing ${listing} read the record again`).toBeLessThan(deadline);
          await delay(100);
          expect(await reserve(api.fetch, "served")).toMatchObject({ status: 200, json: { tasks: [] } });
        }
      }
    } finally {
      broker.getRecord = getRecord;
    }
    const said = logs.filter((l) => l.jobId === "jnewer" && l.actor === "http");
    expect(said).toEqual([expect.objectContaining({ level: 40, msg: expect.stringMatching(/not read/) })]);
    await served.cancel("test over");
  });

  it("the dashboard lists the other jobs", async () => {
    const job = await rt.jobs.submit({ queue: "shown", tasks: [{ n: 0 }] });
    const book = jobBook(rt, partsOf(rt).broker);
    try {
      // Before the fix: the listing threw, and the dashboard's overview with it.
      const listed = await book.listed();
      expect(listed.map((j) => j.id)).toContain(job.id);
      expect(listed.map((j) => j.id)).not.toContain("jnewer");
    } finally {
      await book.stop();
      await job.cancel("test over");
    }
  });
});
