/**
 * Job records this version cannot read (a newer version's, one with a field
 * it cannot decode, one that is not JSON) among readable ones, on both
 * brokers (a real nats-server, and the memory broker of `jetstate/testing`):
 * `rt.jobs.list()` and `GET /jobs` page through every readable job, each
 * once, and past the unreadable ones, which are left out and said once at
 * warn. A page that held one was an error, whatever its filter, and no
 * cursor got past it. The records are written past jetstate: a raw KV put
 * on NATS, the memory server's own store in memory.
 */

import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { createHttpApi, createRuntime, type JobListQuery, type Runtime } from "../../src/index.ts";
import {
  createMemoryBroker,
  createMemoryServer,
  createTestRuntime,
  type MemoryServer,
} from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const TOKEN = "token-list-unreadable-0123456789";
/** Three records `decodeRecord` refuses: of a later version, missing its fields, not JSON. */
const unreadable = {
  jnewer: JSON.stringify({ v: 2, id: "jnewer", queue: "qa" }),
  jbadfield: JSON.stringify({ v: 1, id: "jbadfield", queue: "qa", status: "queuing" }),
  jgarbled: "{ not json",
} as const;
type Unreadable = keyof typeof unreadable;

describe.each(["nats", "memory"])(
  "job records this version cannot read, listed on the %s broker",
  (broker) => {
    let server: NatsServerHandle | undefined;
    let memory: MemoryServer | undefined;
    let rt: Runtime;
    /** The ledger: the jobs submitted, by queue, as submit() answered them. */
    const submitted: { id: string; queue: string }[] = [];
    const logs: { msg: string; level: number; [key: string]: unknown }[] = [];

    beforeAll(async () => {
      const logger = pino({ level: "info" }, { write: (line: string) => void logs.push(JSON.parse(line)) });
      const jobs = { cleanupIntervalMs: 0 };
      let writeRaw: (id: Unreadable) => Promise<void>;
      if (broker === "nats") {
        const natsServer = await startNatsServer();
        server = natsServer;
        rt = await createRuntime({ servers: natsServer.url, logger, jobs });
        writeRaw = async (id) => {
          const nc = await connect({ servers: natsServer.url, name: "raw-record" });
          try {
            await (await new Kvm(nc).open(brokerNames("jetstate").jobsBucket)).put(id, unreadable[id]);
          } finally {
            await nc.close();
          }
        };
      } else {
        const memoryServer = createMemoryServer({ prefix: "jetstate" });
        memory = memoryServer;
        rt = await createTestRuntime({ logger, broker: createMemoryBroker({ server: memoryServer }), jobs });
        writeRaw = async (id) => {
          memoryServerState(memoryServer).records.create("test", id, unreadable[id]);
        };
      }
      const submit = async (queue: string) => {
        const job = await rt.jobs.submit({ queue, tasks: [{ n: 0 }] });
        submitted.push({ id: job.id, queue });
      };
      // Interleaved (on NATS the first submit makes the bucket): pages of 2 and 3 end on either side of them.
      await submit("qa");
      await writeRaw("jnewer");
      for (const queue of ["qb", "qa", "qb"]) await submit(queue);
      await writeRaw("jbadfield");
      await writeRaw("jgarbled");
      for (const queue of ["qa", "qa", "qb"]) await submit(queue);
      // A lane job still running a second after its submit (no worker here) gets its commit
      // written then, and a record rewritten during a walk moves past its cursor: listed again
      // (`pageBucket`). The walks start once every record is as it stays.
      await waitUntil(
        async () => {
          const { jobs } = await rt.jobs.list({ limit: 100 });
          return submitted.every(({ id }) => jobs.some((j) => j.id === id && j.status === "running"));
        },
        { timeoutMs: 10_000, message: "every job's commit written" },
      );
    });

    afterAll(async () => {
      await rt?.stop();
      memory?.close();
      await server?.dispose();
    });

    const idsOf = (queue?: string) =>
      submitted.filter((j) => queue === undefined || j.queue === queue).map((j) => j.id);

    /** Every page of `rt.jobs.list()` from the start. */
    const walk = async (query: JobListQuery & { limit: number }) => {
      const ids: string[] = [];
      let cursor: string | undefined;
      for (let pages = 1; ; pages++) {
        // Before the fix: the page that held an unreadable record threw, and so every walk did.
        const page = await rt.jobs.list({ ...query, ...(cursor === undefined ? {} : { cursor }) });
        expect(page.jobs.length).toBeLessThanOrEqual(query.limit);
        ids.push(...page.jobs.map((j) => j.id));
        if (page.next === undefined) return ids;
        expect(pages, "the walk ends").toBeLessThan(50);
        cursor = page.next;
      }
    };

    const saidAt = (actor: string) =>
      Object.fromEntries(
        Object.keys(unreadable).map((id) => [
          id,
          logs.filter((l) => l.jobId === id && l.actor === actor).map((l) => [l.level, l.msg]),
        ]),
      );
    const oncePerRecord = {
      jnewer: [[40, expect.stringMatching(/not read/)]],
      jbadfield: [[40, expect.stringMatching(/not read/)]],
      jgarbled: [[40, expect.stringMatching(/not read/)]],
    };

    it("rt.jobs.list() pages past them: every readable job once, whatever the filter; each said once at warn", async () => {
      for (const limit of [1, 2, 3, 100]) {
        const all = await walk({ limit });
        expect(all.sort()).toEqual(idsOf().sort());
        expect((await walk({ limit, queue: "qa" })).sort()).toEqual(idsOf("qa").sort());
        expect((await walk({ limit, queue: "qb" })).sort()).toEqual(idsOf("qb").sort());
      }
      expect(await walk({ limit: 2, queue: "none" })).toEqual([]);
      // Read in every walk above, said once.
      expect(saidAt("job")).toEqual(oncePerRecord);
    });

    it("GET /jobs answers 200 on every page and leads past them to every readable job", async () => {
      const api = createHttpApi(rt, {
        tokens: { [TOKEN]: { identity: "reader", role: "read", queues: "*" } },
      });
      for (const limit of [2, 100]) {
        const ids: string[] = [];
        let path = `/jobs?limit=${limit}`;
        for (let pages = 1; ; pages++) {
          const response = await api.fetch(
            new Request(`http://test${path}`, { headers: { authorization: `Bearer ${TOKEN}` } }),
          );
          const json = (await response.json()) as { jobs?: { id: string }[]; next?: string };
          // Before the fix: 500.
          expect({ status: response.status, json }).toMatchObject({
            status: 200,
            json: { jobs: expect.any(Array) },
          });
          ids.push(...(json.jobs ?? []).map((j) => j.id));
          if (json.next === undefined) break;
          expect(pages, "the walk ends").toBeLessThan(50);
          path = `/jobs?limit=${limit}&cursor=${json.next}`;
        }
        expect(ids.sort()).toEqual(idsOf().sort());
      }
      expect(saidAt("http")).toEqual(oncePerRecord);
    });
  },
);
