/**
 * One chaos scenario, run CHAOS_RUNS times (default 3), each run on a fresh
 * 3-node cluster (test/harness/nats-cluster.ts):
 *
 * 1. every runtime with `replicas: 3`; the submitter provisions the streams
 *    and buckets, and the test reads each one raw: all at 3 replicas;
 * 2. two runtimes here, `chaos-submitter` (submits and supervises) and
 *    `chaos-watcher` (may take the job over), and worker processes
 *    (test/fixtures/chaos-worker.ts), all with `servers: cluster.urls`;
 * 3. a job of a few thousand small tasks; once 15 % of it is handled, the
 *    scenario injects its faults;
 * 4. checked against independent witnesses: every task index in the workers'
 *    ledgers, the job's final counts and its record (read raw from KV) exact
 *    against the results stream read raw, `done()` within a bound;
 * 5. reported: stall after each fault (from the results stream's timestamps),
 *    the stream and consumer leaders the cluster elected after it (the
 *    servers' advisories, heard on a connection to each node), duplicate
 *    handler runs (ledgers) and duplicate stored results, printed next to
 *    the targets (never asserted) and written to test/chaos/results/.
 */
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import type { JobHandle, JobSnapshot } from "../../src/api/job-handle.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { type NatsCluster, startNatsCluster } from "../harness/nats-cluster.ts";
import { natsRawResultsMessages } from "../harness/raw-results.ts";
import { delay, waitUntil } from "../harness/wait.ts";
import {
  countsFromRawResults,
  duplicateRuns,
  type Election,
  electionsAfter,
  type Fault,
  type FaultRecovery,
  handledIndexes,
  missing,
  readLedgers,
  recoveries,
} from "./measure.ts";
import { printReports, type RunReport, writeReports } from "./report.ts";
import { WorkerPool } from "./worker-pool.ts";

export const RESULTS_DIR = path.resolve(import.meta.dirname, "results");
const QUEUE = "chaos";
const PREFIX = "jetstate";
/** Every stream and bucket on all three nodes: a lost node loses nothing. */
const REPLICAS = 3;

/** Every stream jetstate made, read raw: none at fewer replicas than asked (the `replicas` option's witness). */
const expectAllReplicated = async (nc: NatsConnection, replicas: number): Promise<void> => {
  const jsm = await jetstreamManager(nc);
  const streams: Array<[string, number]> = [];
  for await (const info of jsm.streams.list()) streams.push([info.config.name, info.config.num_replicas]);
  expect(streams.length).toBeGreaterThanOrEqual(6);
  expect(streams.filter(([, r]) => r !== replicas)).toEqual([]);
};
/** A killed worker's tasks come back after this, not after the 30 s default. */
const ACK_WAIT_MS = 5_000;
/** Generous: the job must end within this after the scenario's last fault. */
const DONE_BOUND_MS = 180_000;
const RUN_TIMEOUT_MS = 10 * 60_000;
const RAW_READ_TIMEOUT_MS = 30_000;

export interface ChaosSettings {
  /** Tasks in the job (default 3000). */
  readonly tasks: number;
  /** Each handler's time, ms (default 20). */
  readonly taskMs: number;
  /** Worker processes (default 3). */
  readonly workers: number;
  /** Each worker's concurrency (default 4). */
  readonly concurrency: number;
}

/** What a scenario's `inject` may use. */
export interface ChaosContext {
  readonly cluster: NatsCluster;
  readonly queue: string;
  readonly tasksStream: string;
  readonly total: number;
  /** The runtime that submitted the job and supervises it, and its connection's name. */
  readonly submitter: Runtime;
  readonly submitterName: string;
  readonly job: JobHandle<number>;
  readonly workers: WorkerPool;
  /** The job ended (done() resolved). */
  jobEnded(): boolean;
  /** Distinct task indexes in the workers' ledgers now. */
  handled(): Promise<number>;
  /** Waits until `more` tasks beyond those handled now are handled, or the job ends; false at the deadline. */
  progressed(more: number, timeoutMs: number): Promise<boolean>;
  /** Runs `action` as a fault named `what`, its time recorded just before. */
  fault(what: string, action: () => Promise<void> | void): Promise<void>;
  /** A figure for the report (e.g. how long a node took to be healthy again). */
  note(key: string, value: string | number): void;
}

export interface ChaosScenario {
  /** File-name-like key: the report's file and run dirs. */
  readonly id: string;
  readonly title: string;
  readonly settings?: Partial<ChaosSettings>;
  /** Injects the faults; resolves once they are over (nodes back, workers replaced). */
  inject(ctx: ChaosContext): Promise<void>;
}

/**
 * ms from now until the cluster names a leader of `stream` other than `old`
 * (polled from /jsz, so to within ~50 ms); undefined if none within `timeoutMs`.
 */
export const newLeaderAfter = async (
  cluster: NatsCluster,
  stream: string,
  old: string,
  timeoutMs = 30_000,
): Promise<number | undefined> => {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    const leader = await cluster.streamLeader(stream);
    if (leader !== undefined && leader !== old) return Date.now() - start;
    await delay(50);
  }
  return undefined;
};

/** CHAOS_MEMORY_CONSUMERS=1: the runtimes keep each job's consumer in the servers' memory (`jobs.memoryConsumers`). */
const memoryConsumers = process.env.CHAOS_MEMORY_CONSUMERS === "1";

/** CHAOS_RUNS, default 3. */
export const chaosRuns = (): number => {
  const raw = process.env.CHAOS_RUNS;
  if (raw === undefined || raw === "") return 3;
  const runs = Number(raw);
  if (!Number.isInteger(runs) || runs < 1)
    throw new Error(`CHAOS_RUNS must be a positive integer, not ${raw}`);
  return runs;
};

/** The scenario's describe block: one test per run, and the report after the last. */
export const describeChaos = (scenario: ChaosScenario): void => {
  const settings: ChaosSettings = {
    tasks: 3000,
    taskMs: 20,
    workers: 3,
    concurrency: 4,
    ...scenario.settings,
  };
  const reports: RunReport[] = [];
  describe(scenario.title, () => {
    afterAll(async () => {
      printReports(scenario.title, reports);
      const file = await writeReports(RESULTS_DIR, scenario.id, reports);
      console.log(`report: ${file}`);
    });
    it.each(Array.from({ length: chaosRuns() }, (_, n) => n + 1))(
      "run %i: every task handled, counts exact against the raw results, done() resolves",
      async (run) => {
        await runOnce(scenario, settings, run, reports);
      },
      RUN_TIMEOUT_MS,
    );
  });
};

/** A pino logger writing to `file` synchronously (a run's logs outlive a failed check). */
const fileLogger = (file: string) =>
  pino({ level: "info" }, pino.destination({ dest: file, sync: true, append: true }));

const runOnce = async (
  scenario: ChaosScenario,
  settings: ChaosSettings,
  run: number,
  reports: RunReport[],
): Promise<void> => {
  const dir = path.join(
    RESULTS_DIR,
    `${scenario.id}-run${run}-${new Date().toISOString().replace(/[:.]/g, "-")}`,
  );
  await mkdir(dir, { recursive: true });
  const faults: Fault[] = [];
  const notes: Record<string, string | number> = {};
  const report = (fields: Partial<RunReport>): RunReport => ({
    scenario: scenario.id,
    run,
    pass: false,
    tasks: settings.tasks,
    inFlight: settings.workers * settings.concurrency,
    workersStarted: 0,
    faults: [],
    dir,
    notes,
    ...fields,
  });
  const cluster = await startNatsCluster();
  const runtimes: Runtime[] = [];
  const elections: Election[] = [];
  const listeners = await watchElections(cluster, elections);
  let raw: NatsConnection | undefined;
  let workers: WorkerPool | undefined;
  let submittedAt = Date.now();
  let endedAt: number | undefined;
  let measured: RunReport | undefined;
  try {
    raw = await connect({ servers: cluster.urls, name: "chaos-raw" });
    const submitterName = "chaos-submitter";
    const submitter = await createRuntime({
      servers: cluster.urls,
      name: submitterName,
      prefix: PREFIX,
      replicas: REPLICAS,
      jobs: { memoryConsumers },
      logger: fileLogger(path.join(dir, "submitter.log")),
    });
    runtimes.push(submitter);
    await submitter.admin.provision([QUEUE]);
    await expectAllReplicated(raw, REPLICAS);
    runtimes.push(
      await createRuntime({
        servers: cluster.urls,
        name: "chaos-watcher",
        prefix: PREFIX,
        replicas: REPLICAS,
        jobs: { memoryConsumers },
        logger: fileLogger(path.join(dir, "watcher.log")),
      }),
    );
    const pool = new WorkerPool({
      servers: cluster.urls,
      queue: QUEUE,
      dir,
      concurrency: settings.concurrency,
      taskMs: settings.taskMs,
    });
    workers = pool;
    await pool.startMany(settings.workers);

    submittedAt = Date.now();
    const job = await submitter.jobs.submit<number, number>({
      queue: QUEUE,
      tasks: Array.from({ length: settings.tasks }, (_, n) => n),
      ackWaitMs: ACK_WAIT_MS,
    });
    const done: Promise<JobSnapshot> = job.done().then((final) => {
      endedAt = Date.now();
      return final;
    });
    const handled = async () => handledIndexes(await readLedgers(pool.ledgerFiles)).size;
    await waitUntil(async () => (await handled()) >= settings.tasks * 0.15, {
      timeoutMs: 60_000,
      intervalMs: 50,
      message: "15 % of the job handled before the first fault",
    });

    await scenario.inject({
      cluster,
      queue: QUEUE,
      tasksStream: brokerNames(PREFIX).tasksStream(QUEUE),
      total: settings.tasks,
      submitter,
      submitterName,
      job,
      workers: pool,
      jobEnded: () => endedAt !== undefined,
      handled,
      progressed: (more, timeoutMs) => progressed(handled, () => endedAt !== undefined, more, timeoutMs),
      fault: async (what, action) => {
        faults.push({ what, at: Date.now() });
        await action();
      },
      note: (key, value) => {
        notes[key] = value;
      },
    });
    const lastFaultAt = Date.now();

    const final = await within(
      done,
      DONE_BOUND_MS,
      `done() within ${DONE_BOUND_MS} ms of the last fault`,
    ).catch((error: unknown) => {
      notes.snapshotAtTimeout = JSON.stringify(job.snapshot());
      throw error;
    });
    const ended = endedAt ?? lastFaultAt;
    await pool.stopAll();

    notes.final = `${final.status} done=${final.done} failed=${final.failed} dead=${final.dead}`;
    const ledger = await readLedgers(pool.ledgerFiles);
    const rawNc = raw;
    const messages = await readRaw("the raw results", () =>
      natsRawResultsMessages(rawNc, QUEUE, job.id, PREFIX),
    );
    const expected = countsFromRawResults(messages);
    const elected = electionsAfter(faults, elections);
    measured = report({
      jobMs: ended - submittedAt,
      faults: recoveries(faults, messages, submittedAt, ended).map((f, n) => ({
        ...f,
        elections: elected[n],
      })),
      duplicateRuns: duplicateRuns(ledger),
      storedDuplicates: expected.storedDuplicates,
      workersStarted: pool.started,
    });
    checkRun({ total: settings.tasks, final, ledger: handledIndexes(ledger), expected, faults, ended });
    checkRecord(await readRaw("the job's record", () => readRecordRaw(rawNc, job.id)), expected);
    reports.push({ ...measured, pass: true });
  } catch (error) {
    // The run is reported failed with whatever was measured before the failed check.
    const partial =
      measured ?? report({ faults: unmeasured(faults, submittedAt), workersStarted: workers?.started ?? 0 });
    reports.push({ ...partial, error: error instanceof Error ? error.message : String(error) });
    throw error;
  } finally {
    await workers?.stopAll();
    for (const rt of runtimes) await rt.stop();
    await raw?.close();
    for (const nc of listeners) await nc.close().catch(() => undefined);
    await cluster.dispose();
  }
};

/**
 * Listens to the leader-elected advisories of every stream and consumer, on
 * a connection to each node (one whose node is killed hears nothing until it
 * reconnects; the others do), each election kept once, with the time its
 * server stamped on it.
 */
const watchElections = async (cluster: NatsCluster, into: Election[]): Promise<NatsConnection[]> => {
  const seen = new Set<string>();
  const connections: NatsConnection[] = [];
  for (const url of cluster.urls) {
    const nc = await connect({ servers: url, name: "chaos-elections", reconnect: false });
    connections.push(nc);
    nc.subscribe("$JS.EVENT.ADVISORY.*.LEADER_ELECTED.>", {
      callback: (error, m) => {
        if (error) return;
        const advisory = m.json<{
          stream?: string;
          consumer?: string;
          leader?: string;
          timestamp?: string;
        }>();
        const of = advisory.consumer
          ? `consumer ${advisory.stream}/${advisory.consumer}`
          : `stream ${advisory.stream}`;
        const key = `${of} ${advisory.leader} ${advisory.timestamp}`;
        if (seen.has(key)) return;
        seen.add(key);
        into.push({
          of,
          leader: advisory.leader ?? "?",
          at: Date.parse(advisory.timestamp ?? "") || Date.now(),
        });
      },
    });
  }
  return connections;
};

/** The job's end, counts and every task against the ledgers and the raw results. */
const checkRun = ({
  total,
  final,
  ledger,
  expected,
  faults,
  ended,
}: {
  total: number;
  final: JobSnapshot;
  ledger: Set<number>;
  expected: ReturnType<typeof countsFromRawResults>;
  faults: readonly Fault[];
  ended: number;
}) => {
  // A fault after the end tests nothing: the scenario's job was too short.
  expect(faults.filter((f) => f.at >= ended).map((f) => f.what)).toEqual([]);
  expect(faults.length).toBeGreaterThan(0);
  // Every task reached a handler (the workers' own witness)...
  expect(missing(ledger, total)).toEqual([]);
  // ...and has an answer stored, and the job counted exactly what is stored.
  expect(missing(expected.indexes, total)).toEqual([]);
  expect({
    status: final.status,
    total: final.total,
    done: final.done,
    failed: final.failed,
    dead: final.dead,
  }).toEqual({
    status: "succeeded",
    total,
    done: expected.done,
    failed: expected.failed,
    dead: expected.dead,
  });
};

/**
 * A read of the test's own witnesses (raw results, the record), tried again
 * for up to 30 s: right after a fault the cluster may answer "JetStream system
 * temporarily unavailable" for a while, which says nothing about the job.
 * Every failed attempt is printed; the last error is thrown at the deadline.
 */
const readRaw = async <A>(what: string, read: () => Promise<A>): Promise<A> => {
  const deadline = Date.now() + RAW_READ_TIMEOUT_MS;
  for (let attempt = 1; ; attempt++) {
    try {
      return await read();
    } catch (error) {
      if (Date.now() >= deadline) throw error;
      console.log(`reading ${what} failed (attempt ${attempt}), trying again: ${String(error)}`);
      await delay(500);
    }
  }
};

/** The record as stored in the jobs bucket, read past the runtime. */
/**
 * The job's record as its bucket's stream leader has it. Not a KV get: on a
 * bucket that allows direct gets, a replica that is behind (catching up after
 * a restart) may answer one with an old revision.
 */
const readRecordRaw = async (nc: NatsConnection, jobId: string): Promise<JobRecord> => {
  const bucket = brokerNames(PREFIX).jobsBucket;
  const jsm = await jetstreamManager(nc);
  const stored = await jsm.streams
    .getMessage(`KV_${bucket}`, { last_by_subj: `$KV.${bucket}.${jobId}` })
    .catch((error: unknown) => {
      throw new Error(`no record of job ${jobId} in the jobs bucket`, { cause: error });
    });
  if (stored === null) throw new Error(`no record of job ${jobId} in the jobs bucket`);
  return stored.json<JobRecord>();
};

const checkRecord = (record: JobRecord, expected: ReturnType<typeof countsFromRawResults>) => {
  expect({ status: record.status, counts: record.counts }).toEqual({
    status: "succeeded",
    counts: { done: expected.done, failed: expected.failed, dead: expected.dead },
  });
};

/** Resolves true once `more` tasks beyond those handled now are handled or the job ended; false at the deadline. */
const progressed = async (
  handled: () => Promise<number>,
  ended: () => boolean,
  more: number,
  timeoutMs: number,
): Promise<boolean> => {
  const target = (await handled()) + more;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (ended() || (await handled()) >= target) return true;
    await delay(50);
  }
  return false;
};

/** Faults of a run that failed before its results could be read. */
const unmeasured = (faults: readonly Fault[], submittedAt: number): FaultRecovery[] =>
  faults.map((f) => ({
    what: f.what,
    atMs: f.at - submittedAt,
    firstResultMs: undefined,
    longestGapMs: undefined,
  }));

/** `promise`, or a rejection naming `what` after `ms`. */
const within = <A>(promise: Promise<A>, ms: number, what: string): Promise<A> => {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
};
