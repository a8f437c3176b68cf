/**
 * The supervision leases are the index of the jobs not over: takeover and
 * the reaper find their candidates there, never by reading every record kept.
 * On the memory broker (the same port contract as NATS): what a pass reads
 * is counted on a spied broker; what the leases bucket holds is read from the
 * server; a job's end is checked against the workers' own ledger.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import {
  createMemoryBroker,
  createMemoryServer,
  type MemoryServer,
} from "../../src/adapters/memory/memory-broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { ConnectionUnavailable } from "../../src/kernel/errors.ts";
import { decodeRecord, encodeRecord } from "../../src/kernel/job-record-codec.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { finishedRecord } from "../harness/finished-records.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const leaseMs = 100;

/** Writes `count` finished records straight into the server's jobs bucket. */
const keepFinished = (server: MemoryServer, count: number) => {
  const records = memoryServerState(server).records;
  const at = Date.now() - 3600_000;
  for (let n = 0; n < count; n++) {
    const r = finishedRecord(n, at);
    records.create("test.seed", r.id, encodeRecord(r));
  }
};

const storedValues = (server: MemoryServer) =>
  memoryServerState(server)
    .leases.live()
    .map((e) => ({ key: e.key, ...(JSON.parse(e.value as string) as { holder: string; until: number }) }));

/**
 * The jobs' leases as the server holds them. A supervising runtime's
 * heartbeat lives in the same bucket (under `heartbeat.`): it is no job's
 * lease, and counting it made "one lease left" true only in the moment
 * between the stale leases going and the next heartbeat.
 */
const storedLeases = (server: MemoryServer) =>
  storedValues(server)
    .filter((e) => !e.key.startsWith("heartbeat."))
    .map(({ key, holder, until }) => ({ jobId: key, holder, until }));

/** Until when `holder`'s heartbeat, as stored, covers the leases it holds (0: none stored). */
const heartbeatUntil = (server: MemoryServer, holder: string) =>
  Math.max(
    0,
    ...storedValues(server).flatMap((e) =>
      e.key.startsWith("heartbeat.") && e.holder === holder ? [e.until] : [],
    ),
  );

/** A running job (no worker) whose supervisor stopped: its lease given back, run out. */
const orphan = async (server: MemoryServer, broker: Broker = createMemoryBroker({ server })) => {
  const seeder = await createRuntime({ broker, logger: silentLogger(), jobs: { leaseMs } });
  const job = await seeder.jobs.submit({ queue: "q", tasks: [1, 2, 3] });
  await seeder.stop();
  return job.id;
};

/** A runtime whose broker counts the job records it reads (listed rows and single reads). */
const countingRuntime = async (server: MemoryServer, jobs: Record<string, unknown> = {}) => {
  let recordsRead = 0;
  const inner = createMemoryBroker({ server, holder: "counting" });
  const { broker } = spiedBroker(inner, (key, _n, _args, call) => {
    const result = call();
    if (key === "getRecord") recordsRead++;
    if (key === "listRecords")
      void (result as Promise<unknown[]>).then((rows) => {
        recordsRead += rows.length;
      });
    return result;
  });
  const rt = await createRuntime({
    broker,
    logger: silentLogger(),
    jobs: { leaseMs, reapIntervalMs: 50, cleanupIntervalMs: 0, ...jobs },
  });
  return { rt, recordsRead: () => recordsRead };
};

/** `holder` supervises the job: its lease, renewed by its own `until` or by the holder's heartbeat. */
const supervisedBy = (server: MemoryServer, jobId: string, holder: string) =>
  storedLeases(server).some(
    (l) =>
      l.jobId === jobId &&
      l.holder === holder &&
      Math.max(l.until, heartbeatUntil(server, holder)) > Date.now(),
  );

describe("takeover and the reaper find their candidates among the leases", () => {
  it("with 5,000 finished records kept, a takeover and reaper passes read the records of the leases only", async () => {
    const server = createMemoryServer();
    keepFinished(server, 5000);
    const jobId = await orphan(server);
    const { rt, recordsRead } = await countingRuntime(server);
    try {
      await waitUntil(() => supervisedBy(server, jobId, "counting"), {
        timeoutMs: 5000,
        message: "the orphan taken over",
      });
      // Several takeover (every 50 ms) and reaper (every 50 ms) passes.
      await delay(300);
      // O(jobs not over): the orphan's record, read by each pass; never the 5,000 finished ones.
      expect(recordsRead()).toBeLessThan(100);
    } finally {
      await rt.stop();
      server.close();
    }
  });

  it("a lease whose job is over or gone is removed by a takeover pass; a live job's stays", async () => {
    const server = createMemoryServer();
    const live = await orphan(server);
    const over = await orphan(server);
    // Ended while nobody supervised it (cancelled from a runtime that never supervises): its
    // lease, given back, stays behind it.
    const other = await createRuntime({
      broker: createMemoryBroker({ server }),
      logger: silentLogger(),
      jobs: { takeOver: false },
    });
    await (await other.jobs.get(over))?.cancel("over");
    await other.stop();
    // A lease of a job whose record is gone, and one of a submit that died before its record.
    const leases = createMemoryBroker({ server, holder: "dead" }).leases;
    await leases.acquire("gone1", 1, Date.now() - 10);
    await leases.enrol("gone2");
    expect(
      storedLeases(server)
        .map((l) => l.jobId)
        .sort(),
    ).toEqual([live, over, "gone1", "gone2"].sort());
    const { rt } = await countingRuntime(server);
    try {
      await waitUntil(() => storedLeases(server).length === 1, {
        timeoutMs: 5000,
        message: "stale leases gone",
      });
      // Once the new supervisor's heartbeat is in the same bucket (what a loaded machine's lag
      // let in before the check): still the live job's lease alone.
      await waitUntil(() => heartbeatUntil(server, "counting") > 0, {
        timeoutMs: 5000,
        message: "the supervisor's heartbeat written",
      });
      expect(storedLeases(server).map((l) => l.jobId)).toEqual([live]);
      await waitUntil(() => supervisedBy(server, live, "counting"), {
        timeoutMs: 5000,
        message: "live taken over",
      });
    } finally {
      await rt.stop();
      server.close();
    }
  });

  it("a job's lease goes when it ends: the bucket holds no lease of a finished job", async () => {
    const server = createMemoryServer();
    // No takeover passes here: a lease left behind would stay (a pass would remove it as stale).
    const rt = await createRuntime({
      broker: createMemoryBroker({ server }),
      logger: silentLogger(),
      jobs: { takeOver: false },
    });
    try {
      rt.workers.start<number, number>({ queue: "q", handler: (t) => t.payload });
      const jobs = await Promise.all([1, 2, 3].map(() => rt.jobs.submit({ queue: "q", tasks: [1, 2] })));
      for (const job of jobs) expect(await job.done()).toMatchObject({ status: "succeeded", done: 2 });
      await waitUntil(() => storedLeases(server).length === 0, {
        timeoutMs: 5000,
        message: "leases released",
      });
      // Nothing left of them, not even a marker.
      expect(memoryServerState(server).leases.get("test", jobs[0]!.id)).toBeUndefined();
    } finally {
      await rt.stop();
      server.close();
    }
  });
});

describe("a job not over without a lease is found once cleanup gives it one", () => {
  const cases: Array<[string, (server: MemoryServer) => Promise<string>]> = [
    [
      "a record an older version left (no lease)",
      async (server) => {
        const jobId = await orphan(server);
        await createMemoryBroker({ server }).leases.remove(jobId);
        return jobId;
      },
    ],
    [
      "a submit whose lease acquire returned false, whose runtime then stopped",
      async (server) => {
        const inner = createMemoryBroker({ server });
        const { broker } = spiedBroker(inner, (key, _n, _args, call) =>
          key === "leases.acquire" ? Promise.resolve(false) : call(),
        );
        return orphan(server, broker);
      },
    ],
  ];

  it.each(cases)("%s", async (_, make) => {
    const server = createMemoryServer();
    const jobId = await make(server);
    expect(storedLeases(server)).toEqual([]);
    const handled: number[] = [];
    const { rt } = await countingRuntime(server);
    try {
      rt.workers.start<number, number>({
        queue: "q",
        handler: (t) => {
          handled.push(t.index);
          return t.payload * 2;
        },
      });
      // Its tasks are answered (workers follow the record), but nobody supervises it: no lease.
      await waitUntil(() => handled.length === 3, { timeoutMs: 5000, message: "tasks answered" });
      await delay(5 * leaseMs);
      expect(storedLeases(server)).toEqual([]);
      expect((await partsOf(rt).broker.getRecord(jobId))?.record.status).toBe("running");

      const report = await rt.admin.cleanup();
      expect(report.leasesAdded).toEqual([jobId]);
      const handle = await waitForEnd(rt, jobId);
      expect(handle).toMatchObject({ status: "succeeded", done: 3, failed: 0, dead: 0 });
      expect([...handled].sort()).toEqual([0, 1, 2]);
      expect((await partsOf(rt).broker.getRecord(jobId))?.record.status).toBe("succeeded");
      // A second pass finds every job not over leased.
      expect((await rt.admin.cleanup({ dryRun: true })).leasesAdded).toEqual([]);
    } finally {
      await rt.stop();
      server.close();
    }
  });
});

/** The job's end as recorded, read once it is there. */
const waitForEnd = async (rt: Runtime, jobId: string) => {
  await waitUntil(
    async () => {
      const status = (await partsOf(rt).broker.getRecord(jobId))?.record.status;
      return status === "succeeded" || status === "failed";
    },
    { timeoutMs: 5000, message: "job ended" },
  );
  return (await rt.jobs.get(jobId))?.snapshot();
};

describe("the lease taken at submit", () => {
  it("a submit whose lease cannot be taken fails, typed: its record (made beside the lease) rolled back, nothing else written", async () => {
    const server = createMemoryServer();
    const inner = createMemoryBroker({ server });
    const down = new ConnectionUnavailable({ message: "lease.acquire: no NATS connection" });
    const { broker } = spiedBroker(inner, (key, _n, _args, call) =>
      key === "leases.acquire" ? Promise.reject(down) : call(),
    );
    const rt = await createRuntime({ broker, logger: silentLogger(), jobs: { leaseMs } });
    try {
      await expect(rt.jobs.submit({ queue: "q", tasks: [1, 2] })).rejects.toMatchObject({
        _tag: "ConnectionUnavailable",
      });
      // The record's create went out beside the lease's: the failed lease rolled it back, so a
      // resubmit with the same key takes it over.
      const records = memoryServerState(server).records.live();
      expect(records.map((entry) => decodeRecord(entry.value as string).phase)).toEqual(["rolledBack"]);
      expect(storedLeases(server)).toEqual([]);
      expect(memoryServerState(server).tasks.subjects()).toEqual([]);
    } finally {
      await rt.stop();
      server.close();
    }
  });
});
