/**
 * The small-job plane (`--only plane`, not in the default set: ~3 min): the
 * per-job protocol of five designs for 1-task jobs, written with raw nats.js
 * (no jetstate runtime), side by side against one nats-server, interleaved
 * per repetition, each on fresh streams and buckets of its own:
 *
 *   A   today's sequence, each step awaited in the order jetstate runs it:
 *       lease (KV get + create), record KV create, task publish (msg id),
 *       durable job consumer create (the commit point), record update
 *       (committed/running), `job.created` note; meanwhile the job's own
 *       results consumer (ephemeral, no acks, as `readResults` makes it: add,
 *       get, consume). Workers learn of the job from a KV watch of the records
 *       and run one pull loop per job (consumer get, consume). At the end:
 *       record re-read + CAS write, job consumer delete, subject purge; lease
 *       delete and results consumer delete not awaited.
 *   B   A with one results reader per process (an ordered consumer on
 *       `results.>`, dispatching by subject) instead of one consumer per job.
 *   C   "lane": record KV create, the task published to
 *       `tasks.<queue>._1.<jobId>` (one message is atomic: the publish is the
 *       commit point), record update; workers pull from ONE durable consumer
 *       per queue filtered on `tasks.<queue>._1.>`; the shared results reader;
 *       the lease a KV create (CAS). End: record CAS write on the revision it
 *       wrote (no re-read); lease delete not awaited.
 *   D   C without the lease and the committed update: record create, publish,
 *       result, final record write. The floor of C.
 *   E   the raw minimum: publish the task, one durable consumer, the worker
 *       publishes the result and acks after its PubAck, the submitter reads
 *       results from one core subscription. E0 is exactly the raw side of
 *       `--only small` (the worker awaits each result publish before the next
 *       task: the issue's ratio is against it); E and A–D answer tasks
 *       concurrently, up to the pull window (64).
 *
 * Each design: `jobs` 1-task jobs with 64 in flight (jobs/s, client and
 * server CPU per job), then `serial` jobs one at a time (p50/p90 of the
 * submit until committed, of submit → result read, and of submit → done).
 * A–D publish each result at once (jetstate's result batcher may wait up to
 * 5 ms for more results; that is not a cost of the protocol).
 *
 * Then, once per run:
 *   steps      each primitive alone, one at a time (p50/p90): KV create /
 *              update / get, a task publish, durable consumer create and
 *              delete, a filtered purge, an ephemeral consumer add + get;
 *   churn      durable consumer create + delete on a work-queue stream
 *              (file storage) with 0, 100, 1,000 and 3,000 other consumers
 *              on it, filling up and deleting down;
 *   checks     whether nats-server accepts `tasks.q._1.>` next to
 *              `tasks.q.<id>` consumers on a work-queue stream, and whether
 *              `expect: { lastSubjectSequence: 0 }` / a msg id make a
 *              create-if-absent publish;
 *   live       (child process) 1,000 durable per-job consumers, a pull loop
 *              on each: server CPU and RSS, client CPU and heap;
 *   actors     (child processes, `node --expose-gc`) JS heap per idle XState
 *              actor, 10,000 of them, with no timer, one or three
 *              `setInterval`s each, or one shared interval: a tiny machine
 *              and jetstate's `jobMachine` with stub actors.
 */
import { spawn } from "node:child_process";
import os from "node:os";
import { fileURLToPath } from "node:url";
import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { defaultSettings as settings } from "../test/harness/finished-records.ts";
import type { NatsServerHandle } from "../test/harness/nats-server.ts";
import { serverCpuClock, serverPid } from "./lib/server.ts";
import { cpuMicrosSince, median, round, sleep } from "./lib/stats.ts";
import { uniqueName } from "./lib/tasks.ts";

// ---------------------------------------------------------------------------
// Shapes and numbers

export interface PlaneShape {
  /** Jobs per in-flight run, at least; the run lasts at least `minSeconds`. */
  readonly jobs: number;
  readonly minSeconds: number;
  readonly inFlight: number;
  /** Jobs one at a time. */
  readonly serial: number;
  /** Other consumers on the stream for the churn measure, and live pull loops for `live`. */
  readonly consumers: number;
  /** Idle actors per `actors` child. */
  readonly actors: number;
}

const designNames = ["E0", "E", "D", "C", "B", "A"] as const;
export type DesignName = (typeof designNames)[number];

export interface DesignRun {
  readonly design: DesignName;
  readonly rep: number;
  /** Jobs in the in-flight run: at least `jobs`, for at least `minSeconds`. */
  readonly jobs: number;
  readonly jobsPerSec: number;
  readonly clientCpuMicrosPerJob: number;
  readonly serverCpuMicrosPerJob: number | null;
  /** One at a time, ms: until committed, until the result was read, until done. */
  readonly commit: Percentiles;
  readonly result: Percentiles;
  readonly done: Percentiles;
}

interface Percentiles {
  readonly p50: number;
  readonly p90: number;
}

/** Nearest-rank percentile of raw samples. */
const percentile = (values: readonly number[], p: number): number => {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
};

const p5090 = (values: readonly number[]): Percentiles => ({
  p50: round(percentile(values, 50), 2),
  p90: round(percentile(values, 90), 2),
});

const nanos = (ms: number) => ms * 1_000_000;

/** jetstate's pull-loop settings (`pullLoop` in adapters/nats/pull-loops.ts). */
const pullLoop = { expires: 3000, idle_heartbeat: 1000 } as const;

const digest = `v1:${"0".repeat(64)}`;

/** The record jetstate writes (~470 B), with a plain job's settings. */
const recordBody = (jobId: string, submitId: string, status: string, phase: string, done: number): string => {
  const now = Date.now();
  return JSON.stringify({
    v: 1,
    id: jobId,
    queue: "q",
    status,
    phase,
    total: 1,
    submitId,
    requestDigest: digest,
    settings,
    counts: { done, failed: 0, dead: 0 },
    createdAt: now,
    updatedAt: now,
    commitDeadline: now + 30_000,
    ...(status === "succeeded" ? { finishedAt: now } : {}),
  });
};

const leaseBody = (holder: string) => JSON.stringify({ v: 1, holder, until: Date.now() + 10_000 });

/** A result message as jetstate writes it: an array of entries. */
const resultBody = (i: number, r: number) => JSON.stringify([{ i, ok: true, r }]);

/** The task body: `{"i":<index>,"p":<payload>}`; the handler doubles the payload. */
const taskBody = (n: number) => `{"i":0,"p":${n}}`;

// ---------------------------------------------------------------------------
// One design's streams, buckets and connection

class Plane {
  readonly prefix: string;
  readonly tasksStream: string;
  readonly resultsStream: string;
  /** Work not awaited by a job (lease release, consumer deletes): awaited before the clock stops. */
  readonly #background = new Set<Promise<unknown>>();
  backgroundErrors = 0;

  private constructor(
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
    readonly jobs: KV | undefined,
    readonly leases: KV | undefined,
    prefix: string,
  ) {
    this.prefix = prefix;
    this.tasksStream = `${prefix}_tasks_q`;
    this.resultsStream = `${prefix}_results`;
  }

  static async open(url: string, design: string, rep: number, buckets: boolean): Promise<Plane> {
    const prefix = uniqueName(`pl${design}`, rep < 0 ? "w" : rep);
    const nc = await connect({ servers: url.split(","), name: `bench-plane-${design}`, noAsyncTraces: true });
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const file = { storage: StorageType.File, num_replicas: 1, duplicate_window: nanos(120_000) };
    await jsm.streams.add({
      name: `${prefix}_tasks_q`,
      subjects: [`${prefix}.tasks.q.>`],
      retention: RetentionPolicy.Workqueue,
      ...file,
    });
    await jsm.streams.add({ name: `${prefix}_results`, subjects: [`${prefix}.results.>`], ...file });
    let jobs: KV | undefined;
    let leases: KV | undefined;
    if (buckets) {
      // As jetstate makes them (adapters/nats/streams.ts ensureBucket): history 1, file, no direct get.
      const kvOptions = { history: 1, storage: StorageType.File, allow_direct: false };
      jobs = await new Kvm(nc).create(`${prefix}_jobs`, kvOptions);
      leases = await new Kvm(nc).create(`${prefix}_leases`, kvOptions);
    }
    return new Plane(nc, js, jsm, jobs, leases, prefix);
  }

  tasksSubject = (jobId: string) => `${this.prefix}.tasks.q.${jobId}`;
  laneSubject = (jobId: string) => `${this.prefix}.tasks.q._1.${jobId}`;
  resultsSubject = (jobId: string) => `${this.prefix}.results.q.${jobId}`;

  background(work: Promise<unknown>): void {
    const tracked = work.then(
      () => undefined,
      () => {
        this.backgroundErrors++;
      },
    );
    this.#background.add(tracked);
    void tracked.then(() => this.#background.delete(tracked));
  }

  async settled(): Promise<void> {
    while (this.#background.size > 0) await Promise.all([...this.#background]);
  }

  async close(): Promise<void> {
    await this.settled();
    const drop = (work: Promise<unknown>) => work.catch(() => undefined);
    await drop(this.jsm.streams.delete(this.tasksStream));
    await drop(this.jsm.streams.delete(this.resultsStream));
    if (this.jobs) await drop(this.jobs.destroy());
    if (this.leases) await drop(this.leases.destroy());
    await this.nc.close();
  }
}

/** A job as its submitter sees it: committed, its result read, done (its end recorded). */
interface JobRun {
  readonly committed: Promise<unknown>;
  readonly result: Promise<number>;
  readonly done: Promise<unknown>;
}

interface Design {
  readonly name: DesignName;
  submit(n: number): JobRun;
  /** Resolves once the work no job awaits (lease release, consumer deletes, answers) is done. */
  settled(): Promise<void>;
  close(): Promise<void>;
}

/** A job whose answer never comes fails the run instead of hanging it. */
const withTimeout = <T>(work: Promise<T>, what: string, ms = 30_000): Promise<T> => {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    work,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
};

let jobCounter = 0;
const newJobId = () => `j${(jobCounter++).toString(36)}${Math.random().toString(36).slice(2, 6)}`;

// ---------------------------------------------------------------------------
// Workers and results readers

/**
 * A worker's answer: the result published (with a message id, as jetstate's
 * batches are), then the task acked after the PubAck. Not awaited by the
 * pull loop: tasks run concurrently up to the pull window, as in jetstate.
 */
const answer = async (plane: Plane, jobId: string, m: JsMsg): Promise<void> => {
  const { i, p } = m.json<{ i: number; p: number }>();
  await plane.js.publish(plane.resultsSubject(jobId), resultBody(i, p * 2), { msgID: `${jobId}.${m.seq}` });
  m.ack();
};

/** Runs `onTask` for every delivery until the messages close; errors (a consumer deleted) end it. */
const pullLoopOver = async (messages: ConsumerMessages, onTask: (m: JsMsg) => void): Promise<void> => {
  try {
    for await (const m of messages) onTask(m);
  } catch {
    // The job's consumer deleted under the loop (its end): nothing left to pull.
  }
};

/**
 * jetstate's worker (A, B): a watch of the records bucket (an ordered
 * consumer, last per subject) and, for every running job, one pull loop on
 * the job's consumer (a consumer get, then consume), closed when the record
 * shows the end.
 */
const startWatchingWorker = async (plane: Plane, window: number) => {
  const loops = new Map<string, ConsumerMessages | "starting">();
  const ended = new Set<string>();
  const follow = async (jobId: string) => {
    loops.set(jobId, "starting");
    try {
      const consumer = await plane.js.consumers.get(plane.tasksStream, jobId);
      const messages = await consumer.consume({
        max_messages: window,
        threshold_messages: Math.max(1, window >> 1),
        ...pullLoop,
        abort_on_missing_resource: true,
      });
      if (ended.has(jobId)) {
        await messages.close();
        return;
      }
      loops.set(jobId, messages);
      await pullLoopOver(messages, (m) => plane.background(answer(plane, jobId, m)));
    } catch {
      // The job ended (its consumer deleted) before its loop started.
    } finally {
      loops.delete(jobId);
      ended.delete(jobId);
    }
  };
  const bucket = `${plane.prefix}_jobs`;
  const watch = await plane.js.consumers.get(`KV_${bucket}`, {
    filter_subjects: `$KV.${bucket}.>`,
    deliver_policy: DeliverPolicy.LastPerSubject,
  });
  const records = await watch.consume({ ...pullLoop });
  const watching = (async () => {
    for await (const m of records) {
      if (m.data.length === 0) continue;
      const record = m.json<{ id: string; status: string }>();
      if (record.status === "running" && !loops.has(record.id)) void follow(record.id);
      else if (record.status === "succeeded" || record.status === "failed") {
        const loop = loops.get(record.id);
        if (loop === "starting") ended.add(record.id);
        else if (loop) void loop.close();
      }
    }
  })();
  return {
    stop: async () => {
      await records.close();
      await watching;
      await Promise.all(
        [...loops.values()].map((loop) =>
          loop === "starting" ? undefined : loop.close().catch(() => undefined),
        ),
      );
    },
  };
};

/** The lane's worker (C, D): ONE durable consumer per queue on `tasks.<queue>._1.>`, one pull loop. */
const startLaneWorker = async (plane: Plane, window: number) => {
  const lanePrefix = `${plane.prefix}.tasks.q._1.`;
  await plane.jsm.consumers.add(plane.tasksStream, {
    durable_name: "lane",
    filter_subject: `${lanePrefix}>`,
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(settings.ackWaitMs),
    max_deliver: settings.maxDeliver,
    max_ack_pending: 20_000,
    deliver_policy: DeliverPolicy.All,
  });
  const consumer = await plane.js.consumers.get(plane.tasksStream, "lane");
  const messages = await consumer.consume({
    max_messages: window,
    threshold_messages: Math.max(1, window >> 1),
    ...pullLoop,
  });
  const loop = pullLoopOver(messages, (m) =>
    plane.background(answer(plane, m.subject.slice(lanePrefix.length), m)),
  );
  return {
    stop: async () => {
      await messages.close();
      await loop;
    },
  };
};

/** One results reader per process (B, C, D): an ordered consumer on `results.>`, by subject to the job. */
const startSharedResults = async (plane: Plane) => {
  const waiting = new Map<string, (result: number) => void>();
  const subjectPrefix = `${plane.prefix}.results.q.`;
  const consumer = await plane.js.consumers.get(plane.resultsStream, {
    filter_subjects: `${plane.prefix}.results.>`,
    deliver_policy: DeliverPolicy.New,
  });
  const messages = await consumer.consume({ max_messages: 256, ...pullLoop });
  const reading = (async () => {
    for await (const m of messages) {
      const jobId = m.subject.slice(subjectPrefix.length);
      const [entry] = m.json<Array<{ r: number }>>();
      const resolve = waiting.get(jobId);
      waiting.delete(jobId);
      if (resolve && entry) resolve(entry.r);
    }
  })();
  return {
    /** Registered before the job is submitted: its result may come before the submit resolves. */
    expect: (jobId: string) => new Promise<number>((resolve) => waiting.set(jobId, resolve)),
    stop: async () => {
      await messages.close();
      await reading;
    },
  };
};

/**
 * A's per-job results feed, as `readResults` makes it: an ephemeral consumer
 * without acks (add), a get, consume. Read until closed; the consumer is
 * deleted on close (not awaited, as in jetstate).
 */
const perJobResults = (plane: Plane, jobId: string) => {
  let closeNow: (() => void) | undefined;
  let closed = false;
  let answered: (result: number) => void = () => undefined;
  const result = new Promise<number>((resolve) => {
    answered = resolve;
  });
  const reading = (async () => {
    const info = await plane.jsm.consumers.add(plane.resultsStream, {
      filter_subject: plane.resultsSubject(jobId),
      ack_policy: AckPolicy.None,
      deliver_policy: DeliverPolicy.All,
      inactive_threshold: nanos(60_000),
    });
    const consumer = await plane.js.consumers.get(plane.resultsStream, info.name);
    const messages = await consumer.consume({
      max_messages: 256,
      ...pullLoop,
      abort_on_missing_resource: true,
    });
    closeNow = () =>
      plane.background(
        messages.close().then(() => plane.jsm.consumers.delete(plane.resultsStream, info.name)),
      );
    if (closed) closeNow();
    // Read for the job's whole life, as the job actor's feed does.
    for await (const m of messages) {
      const [entry] = m.json<Array<{ r: number }>>();
      if (entry) answered(entry.r);
    }
  })();
  plane.background(reading);
  return {
    result,
    close: () => {
      closed = true;
      closeNow?.();
    },
  };
};

// ---------------------------------------------------------------------------
// The designs

const holder = `bench-${process.pid}`;

/** A and B: today's per-job sequence; `sharedResults` makes it B. */
const openToday = async (
  url: string,
  rep: number,
  window: number,
  sharedResults: boolean,
): Promise<Design> => {
  const name: DesignName = sharedResults ? "B" : "A";
  const plane = await Plane.open(url, name, rep, true);
  const jobs = plane.jobs!;
  const leases = plane.leases!;
  const worker = await startWatchingWorker(plane, window);
  const shared = sharedResults ? await startSharedResults(plane) : undefined;
  return {
    name,
    submit: (n) => {
      const jobId = newJobId();
      const submitId = Math.random().toString(36).slice(2, 10);
      // The job actor starts its results feed and its submit together.
      const feed = shared
        ? { result: shared.expect(jobId), close: () => undefined }
        : perJobResults(plane, jobId);
      const committed = (async () => {
        // leases.acquire on a new job: a get, then a create.
        await leases.get(jobId);
        const leaseRevision = await leases.create(jobId, leaseBody(holder));
        const created = await jobs.create(jobId, recordBody(jobId, submitId, "queuing", "submitting", 0));
        await plane.js.publish(plane.tasksSubject(jobId), taskBody(n), { msgID: `${jobId}.${submitId}.0` });
        // The commit point.
        await plane.jsm.consumers.add(plane.tasksStream, {
          durable_name: jobId,
          filter_subject: plane.tasksSubject(jobId),
          ack_policy: AckPolicy.Explicit,
          ack_wait: nanos(settings.ackWaitMs),
          max_deliver: settings.maxDeliver,
          max_ack_pending: 20_000,
          deliver_policy: DeliverPolicy.All,
        });
        await jobs.update(jobId, recordBody(jobId, submitId, "running", "committed", 0), created);
        plane.nc.publish(`${plane.prefix}.events.job.created.q`, jobId);
        return leaseRevision;
      })();
      const result = withTimeout(feed.result, `${name} job ${jobId}`);
      const done = Promise.all([committed, result]).then(async ([leaseRevision]) => {
        // finalizeJob: updateRecordWith (re-read, CAS write), then removeTasks (consumer delete, purge).
        const stored = await jobs.get(jobId);
        await jobs.update(jobId, recordBody(jobId, submitId, "succeeded", "committed", 1), stored!.revision);
        await plane.jsm.consumers.delete(plane.tasksStream, jobId);
        await plane.jsm.streams.purge(plane.tasksStream, { filter: plane.tasksSubject(jobId) });
        // After the actor completes, not awaited: the lease released, the feed's consumer deleted.
        plane.background(leases.delete(jobId, { previousSeq: leaseRevision }));
        feed.close();
      });
      return { committed, result, done };
    },
    settled: () => plane.settled(),
    close: async () => {
      await worker.stop();
      await shared?.stop();
      await plane.close();
    },
  };
};

/** C (lane, with lease and the committed update) and D (its floor: neither). */
const openLane = async (url: string, rep: number, window: number, floor: boolean): Promise<Design> => {
  const name: DesignName = floor ? "D" : "C";
  const plane = await Plane.open(url, name, rep, true);
  const jobs = plane.jobs!;
  const leases = plane.leases!;
  const worker = await startLaneWorker(plane, window);
  const shared = await startSharedResults(plane);
  return {
    name,
    submit: (n) => {
      const jobId = newJobId();
      const submitId = Math.random().toString(36).slice(2, 10);
      const answered = shared.expect(jobId);
      const committed = (async () => {
        // The lease as a KV create (CAS): a new job has none. In jetstate's order, before the record.
        const leaseRevision = floor ? undefined : await leases.create(jobId, leaseBody(holder));
        const created = await jobs.create(jobId, recordBody(jobId, submitId, "queuing", "submitting", 0));
        // The commit point: one message is atomic, and the lane's consumer already exists.
        await plane.js.publish(plane.laneSubject(jobId), taskBody(n), { msgID: `${jobId}.${submitId}.0` });
        const revision = floor
          ? created
          : await jobs.update(jobId, recordBody(jobId, submitId, "running", "committed", 0), created);
        return { revision, leaseRevision };
      })();
      const result = withTimeout(answered, `${name} job ${jobId}`);
      const done = Promise.all([committed, result]).then(async ([{ revision, leaseRevision }]) => {
        // The end: a CAS on the revision this process wrote last (a conflict would re-read).
        await jobs.update(jobId, recordBody(jobId, submitId, "succeeded", "committed", 1), revision);
        if (leaseRevision !== undefined)
          plane.background(leases.delete(jobId, { previousSeq: leaseRevision }));
      });
      return { committed, result, done };
    },
    settled: () => plane.settled(),
    close: async () => {
      await worker.stop();
      await shared.stop();
      await plane.close();
    },
  };
};

/**
 * E0 and E: the raw minimum, as `--only small`'s raw side (one unfiltered
 * durable consumer, results read from a core subscription). E0's worker
 * awaits each result publish before the next task, as that side does; E's
 * answers concurrently, like A–D.
 */
const openRaw = async (url: string, rep: number, window: number, serialWorker: boolean): Promise<Design> => {
  const name: DesignName = serialWorker ? "E0" : "E";
  const plane = await Plane.open(url, name, rep, false);
  const subject = `${plane.prefix}.tasks.q.all`;
  await plane.jsm.consumers.add(plane.tasksStream, { durable_name: "work", ack_policy: AckPolicy.Explicit });
  const waiting = new Map<number, (value: number) => void>();
  const results = plane.nc.subscribe(`${plane.prefix}.results.>`, {
    callback: (_, msg) => {
      const { i, r } = msg.json<{ i: number; r: number }>();
      waiting.get(i)?.(r);
      waiting.delete(i);
    },
  });
  const consumer = await plane.js.consumers.get(plane.tasksStream, "work");
  const messages = await consumer.consume({ max_messages: window });
  const answerRaw = async (m: JsMsg) => {
    const { i, p } = m.json<{ i: number; p: number }>();
    await plane.js.publish(`${plane.prefix}.results.${i}`, JSON.stringify({ i, r: p * 2 }));
    m.ack();
  };
  const working = (async () => {
    for await (const m of messages) {
      if (serialWorker) await answerRaw(m);
      else plane.background(answerRaw(m));
    }
  })();
  let id = 0;
  return {
    name,
    submit: (n) => {
      const i = id++;
      const answered = new Promise<number>((resolve) => waiting.set(i, resolve));
      const committed = plane.js.publish(subject, JSON.stringify({ i, p: n }));
      const result = withTimeout(answered, `${name} job ${i}`);
      return { committed, result, done: result };
    },
    settled: () => plane.settled(),
    close: async () => {
      await messages.close();
      await working;
      results.unsubscribe();
      await plane.close();
    },
  };
};

const openDesign = (design: DesignName, url: string, rep: number, window: number): Promise<Design> => {
  switch (design) {
    case "A":
      return openToday(url, rep, window, false);
    case "B":
      return openToday(url, rep, window, true);
    case "C":
      return openLane(url, rep, window, false);
    case "D":
      return openLane(url, rep, window, true);
    case "E":
      return openRaw(url, rep, window, false);
    case "E0":
      return openRaw(url, rep, window, true);
  }
};

// ---------------------------------------------------------------------------
// Measuring a design

const measureDesign = async (
  design: Design,
  shape: { jobs: number; inFlight: number; serial: number; minSeconds: number },
  rep: number,
  serverCpu: (() => number) | undefined,
): Promise<DesignRun> => {
  let next = 0;
  const cpu = process.cpuUsage();
  const server0 = serverCpu?.();
  const started = performance.now();
  // At least `jobs`, and for at least `minSeconds`: the server's CPU clock ticks every 10 ms.
  const more = () => next < shape.jobs || performance.now() - started < shape.minSeconds * 1000;
  const lane = async () => {
    while (more()) {
      const n = next++;
      const job = design.submit(n);
      const [, result] = await Promise.all([job.committed, job.result, job.done]);
      if (result !== n * 2) throw new Error(`${design.name}: wrong result for ${n}: ${result}`);
    }
  };
  await Promise.all(Array.from({ length: shape.inFlight }, lane));
  await design.settled();
  const seconds = (performance.now() - started) / 1000;
  const clientCpu = cpuMicrosSince(cpu);
  const jobs = next;
  const serverMicros = server0 === undefined || !serverCpu ? null : serverCpu() - server0;
  const commitMs: number[] = [];
  const resultMs: number[] = [];
  const doneMs: number[] = [];
  for (let k = 0; k < shape.serial; k++) {
    const t0 = performance.now();
    const job = design.submit(k);
    const stamp = (into: number[]) => () => {
      into.push(performance.now() - t0);
    };
    await Promise.all([
      job.committed.then(stamp(commitMs)),
      job.result.then(stamp(resultMs)),
      job.done.then(stamp(doneMs)),
    ]);
    await design.settled();
  }
  return {
    design: design.name,
    rep,
    jobs,
    jobsPerSec: Math.round(jobs / seconds),
    clientCpuMicrosPerJob: Math.round(clientCpu / jobs),
    serverCpuMicrosPerJob: serverMicros === null ? null : Math.round(serverMicros / jobs),
    commit: p5090(commitMs),
    result: p5090(resultMs),
    done: p5090(doneMs),
  };
};

/** A design opened, warmed up, measured and closed; `settled` awaits its background work. */
const runDesign = async (
  name: DesignName,
  url: string,
  rep: number,
  shape: PlaneShape,
  serverCpu: (() => number) | undefined,
): Promise<DesignRun> => {
  const design = await openDesign(name, url, rep, shape.inFlight);
  try {
    await sleep(100); // the worker's pulls and the readers are up before anything is timed
    const warmUp = { jobs: Math.min(shape.jobs, 100), inFlight: shape.inFlight, serial: 5, minSeconds: 0 };
    await measureDesign(design, warmUp, -1, undefined);
    return await measureDesign(design, shape, rep, serverCpu);
  } finally {
    await design.close();
  }
};

// ---------------------------------------------------------------------------
// Primitive steps, consumer churn, the checks

const timeEach = async (count: number, step: (k: number) => Promise<unknown>): Promise<number[]> => {
  const ms: number[] = [];
  for (let k = 0; k < count; k++) {
    const t0 = performance.now();
    await step(k);
    ms.push(performance.now() - t0);
  }
  return ms;
};

const jobConsumer = (name: string, filter: string) => ({
  durable_name: name,
  filter_subject: filter,
  ack_policy: AckPolicy.Explicit,
  ack_wait: nanos(settings.ackWaitMs),
  max_deliver: settings.maxDeliver,
  max_ack_pending: 20_000,
  deliver_policy: DeliverPolicy.All,
});

export interface StepCost extends Percentiles {
  /** nats-server CPU per operation, µs (its clock ticks every 10 ms: rough for the cheap steps). */
  readonly serverMicros: number | null;
}

/** Each primitive a job's protocol is made of, alone, one at a time: wall time and server CPU. */
const measureSteps = async (url: string, samples: number, serverCpu: (() => number) | undefined) => {
  const plane = await Plane.open(url, "steps", 0, true);
  try {
    const jobs = plane.jobs!;
    const ids = Array.from({ length: samples }, () => newJobId());
    const revisions: number[] = [];
    const body = recordBody("x", "s", "queuing", "submitting", 0);
    const steps: Record<string, StepCost> = {};
    const step = async (name: string, op: (k: number) => Promise<unknown>) => {
      const server0 = serverCpu?.();
      const ms = await timeEach(samples, op);
      const server =
        server0 === undefined || !serverCpu ? null : Math.round((serverCpu() - server0) / samples);
      steps[name] = { ...p5090(ms), serverMicros: server };
    };
    await step("KV create (record)", async (k) => {
      revisions[k] = await jobs.create(ids[k]!, body);
    });
    await step("KV update (CAS on revision)", async (k) => {
      revisions[k] = await jobs.update(ids[k]!, body, revisions[k]!);
    });
    await step("KV get", (k) => jobs.get(ids[k]!));
    await step("task publish (work-queue, file, msg id)", (k) =>
      plane.js.publish(plane.tasksSubject(ids[k]!), taskBody(k), { msgID: ids[k]! }),
    );
    await step("durable consumer create (per job, 1 message)", (k) =>
      plane.jsm.consumers.add(plane.tasksStream, jobConsumer(ids[k]!, plane.tasksSubject(ids[k]!))),
    );
    await step("consumer get (info)", (k) => plane.js.consumers.get(plane.tasksStream, ids[k]!));
    await step("durable consumer delete", (k) => plane.jsm.consumers.delete(plane.tasksStream, ids[k]!));
    await step("filtered purge (1 message)", (k) =>
      plane.jsm.streams.purge(plane.tasksStream, { filter: plane.tasksSubject(ids[k]!) }),
    );
    const ephemerals: string[] = [];
    await step("ephemeral results consumer add + get", async (k) => {
      const info = await plane.jsm.consumers.add(plane.resultsStream, {
        filter_subject: plane.resultsSubject(ids[k]!),
        ack_policy: AckPolicy.None,
        inactive_threshold: nanos(60_000),
      });
      await plane.js.consumers.get(plane.resultsStream, info.name);
      ephemerals.push(info.name);
    });
    await step("ephemeral consumer delete", (k) =>
      plane.jsm.consumers.delete(plane.resultsStream, ephemerals[k]!),
    );
    await step("result publish (limits, file, msg id)", (k) =>
      plane.js.publish(plane.resultsSubject(ids[k]!), resultBody(0, k), { msgID: ids[k]! }),
    );
    return steps;
  } finally {
    await plane.close();
  }
};

/**
 * Durable consumer create + delete on a work-queue stream (file storage)
 * with 0, 100, `existing` and 3 × `existing` other consumers on it: measured
 * on the way up (filling) and again on the way down (deleting the others),
 * so a drift of the machine's load shows as a difference between the two.
 */
const measureChurn = async (url: string, existing: number, samples: number) => {
  const plane = await Plane.open(url, "churn", 0, false);
  try {
    const { jsm, tasksStream } = plane;
    const pairs = async (tag: string) => {
      const create: number[] = [];
      const remove: number[] = [];
      for (let k = 0; k < samples; k++) {
        const name = `${tag}x${k}`;
        let t0 = performance.now();
        await jsm.consumers.add(tasksStream, jobConsumer(name, plane.tasksSubject(name)));
        create.push(performance.now() - t0);
        t0 = performance.now();
        await jsm.consumers.delete(tasksStream, name);
        remove.push(performance.now() - t0);
      }
      return { create: p5090(create), delete: p5090(remove) };
    };
    const levels = [...new Set([0, 100, existing, 3 * existing])].sort((x, y) => x - y);
    const fillMs: number[] = [];
    let filled = 0;
    const up: Array<{ others: number; create: Percentiles; delete: Percentiles }> = [];
    for (const level of levels) {
      fillMs.push(
        ...(await timeEach(level - filled, (k) =>
          jsm.consumers.add(tasksStream, jobConsumer(`f${filled + k}`, plane.tasksSubject(`f${filled + k}`))),
        )),
      );
      filled = level;
      up.push({ others: level, ...(await pairs(`u${level}`)) });
    }
    const down: typeof up = [];
    const drainMs: number[] = [];
    for (const level of [...levels].reverse()) {
      drainMs.push(
        ...(await timeEach(filled - level, (k) => jsm.consumers.delete(tasksStream, `f${filled - 1 - k}`))),
      );
      filled = level;
      down.push({ others: level, ...(await pairs(`d${level}`)) });
    }
    return {
      samples,
      up,
      down: down.reverse(),
      fill: p5090(fillMs),
      fillSeconds: round(fillMs.reduce((x, y) => x + y, 0) / 1000, 2),
      drain: p5090(drainMs),
    };
  } finally {
    await plane.close();
  }
};

const outcome = async (work: Promise<unknown>): Promise<string> => {
  try {
    const value = await work;
    const ack = value as { seq?: number; duplicate?: boolean } | undefined;
    return ack && typeof ack.seq === "number"
      ? `accepted (seq ${ack.seq}${ack.duplicate ? ", duplicate" : ""})`
      : "accepted";
  } catch (error) {
    const { code, message } = error as { code?: unknown; message?: string };
    return `refused: ${message ?? String(error)}${code !== undefined ? ` (${String(code)})` : ""}`;
  }
};

/** What the server accepts: consumer filters on a work-queue stream, and create-if-absent publishes. */
const runChecks = async (url: string) => {
  const plane = await Plane.open(url, "checks", 0, false);
  try {
    const { jsm, js, tasksStream, prefix } = plane;
    const add = (name: string, filter: string) =>
      outcome(jsm.consumers.add(tasksStream, jobConsumer(name, filter)));
    const filters: Array<{ step: string; outcome: string }> = [];
    const tryFilter = async (step: string, name: string, filter: string) => {
      filters.push({ step, outcome: await add(name, filter) });
    };
    await tryFilter("per-job `tasks.q.j1` on an empty stream", "j1", `${prefix}.tasks.q.j1`);
    await tryFilter("lane `tasks.q._1.>` next to it", "lane", `${prefix}.tasks.q._1.>`);
    await tryFilter("per-job `tasks.q.j2` after the lane", "j2", `${prefix}.tasks.q.j2`);
    await tryFilter("per-job `tasks.q._1` (a job id `_1`)", "j_1", `${prefix}.tasks.q._1`);
    await tryFilter("`tasks.q._1.x` inside the lane", "inside", `${prefix}.tasks.q._1.x`);
    await tryFilter("`tasks.q.>` over all of them", "all", `${prefix}.tasks.q.>`);

    const creates: Array<{ step: string; outcome: string }> = [];
    const publish = async (step: string, subject: string, options: object) => {
      creates.push({ step, outcome: await outcome(js.publish(subject, "x", options)) });
    };
    const first = { expect: { lastSubjectSequence: 0 } };
    const lane = `${prefix}.tasks.q._1.k1`;
    await publish("lane task, expect last subject seq 0", lane, first);
    await publish("the same again", lane, first);
    // Take it and ack it: on a work-queue stream the acked task is gone, and with it the guard.
    const consumer = await js.consumers.get(tasksStream, "lane");
    const taken = await consumer.next({ expires: 2000 });
    if (taken) await taken.ackAck();
    await publish("the same after its task was acked (removed)", lane, first);
    const results = `${prefix}.results.q.k1`;
    await publish("results stream (limits), expect last subject seq 0", results, first);
    await publish("the same again", results, first);
    await publish("msg id m1", `${prefix}.results.q.k2`, { msgID: "m1" });
    await publish("msg id m1 again (in the duplicate window)", `${prefix}.results.q.k2`, { msgID: "m1" });
    await publish("msg id m1 on another subject", `${prefix}.results.q.k3`, { msgID: "m1" });
    return { filters, creates };
  } finally {
    await plane.close();
  }
};

// ---------------------------------------------------------------------------
// Child processes: live consumers and idle actors

const childFile = fileURLToPath(new URL("./job-plane-child.ts", import.meta.url));
const repoRoot = fileURLToPath(new URL("..", import.meta.url));

const runChild = (args: readonly string[], timeoutMs = 180_000): Promise<unknown> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--expose-gc", "--import", "tsx", childFile, ...args], {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NODE_OPTIONS: "" },
    });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      err += chunk;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const line = out.trim().split("\n").pop() ?? "";
      if (code !== 0)
        return reject(new Error(`plane child ${args[0]}: exit ${code ?? signal}\n${err.slice(-2000)}`));
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(
          new Error(`plane child ${args[0]}: no JSON on stdout\n${out.slice(-500)}\n${err.slice(-1000)}`),
        );
      }
    });
  });

export const actorModes = [
  "tiny:none",
  "tiny:per",
  "tiny:per3",
  "tiny:shared",
  "job:none",
  "job:per",
  "job:per3",
  "job:shared",
] as const;

// ---------------------------------------------------------------------------
// The section

export interface PlaneOptions {
  readonly shape: PlaneShape;
  readonly reps: number;
  /** Which parts to run: designs, steps, churn, checks, live, actors. */
  readonly parts: readonly string[];
}

export async function measureJobPlane(
  server: NatsServerHandle,
  options: PlaneOptions,
  log: (line: string) => void,
) {
  const { shape, reps, parts } = options;
  const url = server.url;
  const serverCpu = serverCpuClock(server);
  const wants = (part: string) => parts.includes(part);
  const load = () => (os.loadavg()[0] ?? 0).toFixed(2);

  let checks: Awaited<ReturnType<typeof runChecks>> | undefined;
  if (wants("checks")) {
    checks = await runChecks(url);
    for (const c of [...checks.filters, ...checks.creates]) log(`plane check: ${c.step}: ${c.outcome}`);
  }

  const runs: DesignRun[] = [];
  const loadAverages: string[] = [load()];
  if (wants("designs")) {
    for (let rep = 0; rep < reps; rep++) {
      for (const name of designNames) {
        const run = await runDesign(name, url, rep, shape, serverCpu);
        runs.push(run);
        log(
          `plane ${name.padEnd(2)} rep ${rep}: ${run.jobsPerSec} jobs/s (${shape.inFlight} in flight), ` +
            `client ${run.clientCpuMicrosPerJob} µs/job, server ${run.serverCpuMicrosPerJob ?? "?"} µs/job; ` +
            `one at a time p50/p90 ms: commit ${run.commit.p50}/${run.commit.p90}, ` +
            `result ${run.result.p50}/${run.result.p90}, done ${run.done.p50}/${run.done.p90} (load ${load()})`,
        );
      }
      loadAverages.push(load());
    }
  }
  const summary = designNames
    .map((design) => {
      const mine = runs.filter((r) => r.design === design);
      if (mine.length === 0) return undefined;
      const med = (pick: (r: DesignRun) => number) => round(median(mine.map(pick)), 2);
      const e0 = runs.filter((r) => r.design === "E0");
      const perRepToE0 = mine.map((r) => {
        const raw = e0.find((x) => x.rep === r.rep);
        return raw ? round(r.jobsPerSec / raw.jobsPerSec, 3) : Number.NaN;
      });
      return {
        design,
        jobsPerSec: med((r) => r.jobsPerSec),
        jobsPerSecRange: [
          Math.min(...mine.map((r) => r.jobsPerSec)),
          Math.max(...mine.map((r) => r.jobsPerSec)),
        ],
        toE0: round(median(perRepToE0), 3),
        toE0PerRep: perRepToE0,
        clientCpuMicrosPerJob: med((r) => r.clientCpuMicrosPerJob),
        serverCpuMicrosPerJob: mine.every((r) => r.serverCpuMicrosPerJob !== null)
          ? med((r) => r.serverCpuMicrosPerJob!)
          : null,
        commitP50: med((r) => r.commit.p50),
        resultP50: med((r) => r.result.p50),
        resultP90: med((r) => r.result.p90),
        doneP50: med((r) => r.done.p50),
        doneP90: med((r) => r.done.p90),
      };
    })
    .filter((s) => s !== undefined);

  let steps: Awaited<ReturnType<typeof measureSteps>> | undefined;
  if (wants("steps")) {
    steps = await measureSteps(url, 200, serverCpu);
    for (const [step, p] of Object.entries(steps))
      log(`plane step ${step}: p50 ${p.p50} ms, p90 ${p.p90} ms`);
  }
  let churn: Awaited<ReturnType<typeof measureChurn>> | undefined;
  if (wants("churn")) {
    churn = await measureChurn(url, shape.consumers, 200);
    log(`plane churn: ${JSON.stringify(churn)}`);
  }
  let live: unknown;
  if (wants("live")) {
    const pid = serverPid(server);
    live = await runChild(["live", url, String(pid ?? 0), String(shape.consumers)]);
    log(`plane live consumers: ${JSON.stringify(live)}`);
  }
  const actors: unknown[] = [];
  if (wants("actors")) {
    for (const mode of actorModes) {
      const result = await runChild(["actors", mode, String(shape.actors)]);
      actors.push(result);
      log(`plane actors ${mode}: ${JSON.stringify(result)}`);
    }
  }
  return { shape, reps, loadAverages, runs, summary, steps, churn, checks, live, actors };
}

export type JobPlaneResult = Awaited<ReturnType<typeof measureJobPlane>>;

const kib = (bytes: number | null | undefined) =>
  bytes === null || bytes === undefined ? "–" : `${(bytes / 1024).toFixed(2)} KiB`;

/** The section's page in the run's markdown report. */
export function planeMarkdown(plane: JobPlaneResult): string[] {
  const lines: string[] = [];
  const { shape } = plane;
  lines.push(
    `## Small-job plane, raw nats.js (${shape.jobs} 1-task jobs, ${shape.inFlight} in flight; ${shape.serial} one at a time; medians of ${plane.reps})`,
    "",
    `Load average (1 min) before and after each repetition: ${plane.loadAverages.join(", ")}.`,
    "",
    "| design | jobs/s (min–max) | ÷ E0 | client µs/job | server µs/job | commit p50 ms | result p50 / p90 ms | done p50 / p90 ms |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  );
  for (const s of plane.summary) {
    lines.push(
      `| ${s.design} | ${s.jobsPerSec} (${s.jobsPerSecRange.join("–")}) | ${s.toE0} | ${s.clientCpuMicrosPerJob} | ` +
        `${s.serverCpuMicrosPerJob ?? "–"} | ${s.commitP50} | ${s.resultP50} / ${s.resultP90} | ${s.doneP50} / ${s.doneP90} |`,
    );
  }
  lines.push("");
  if (plane.steps) {
    lines.push(
      "Each step alone, one at a time:",
      "",
      "| step | p50 ms | p90 ms | server CPU µs |",
      "| --- | ---: | ---: | ---: |",
    );
    for (const [step, p] of Object.entries(plane.steps))
      lines.push(`| ${step} | ${p.p50} | ${p.p90} | ${p.serverMicros ?? "–"} |`);
    lines.push("");
  }
  const c = plane.churn;
  if (c) {
    lines.push(
      `Durable consumer create + delete on a work-queue stream (file), ${c.samples} pairs per level, p50 / p90 ms, ` +
        "measured while filling (up) and again while deleting the others (down):",
      "",
      "| other consumers on the stream | create, up | create, down | delete, up | delete, down |",
      "| ---: | ---: | ---: | ---: | ---: |",
    );
    c.up.forEach((u, k) => {
      const d = c.down[k]!;
      lines.push(
        `| ${u.others} | ${u.create.p50} / ${u.create.p90} | ${d.create.p50} / ${d.create.p90} | ` +
          `${u.delete.p50} / ${u.delete.p90} | ${d.delete.p50} / ${d.delete.p90} |`,
      );
    });
    lines.push(
      "",
      `Filling (${c.fillSeconds} s): each create p50 ${c.fill.p50} ms; deleting them p50 ${c.drain.p50} ms.`,
      "",
    );
  }
  if (plane.checks) {
    lines.push("Checks:", "", "| what | server's answer |", "| --- | --- |");
    for (const k of [...plane.checks.filters, ...plane.checks.creates])
      lines.push(`| ${k.step} | ${k.outcome} |`);
    lines.push("");
  }
  const live = plane.live as
    | {
        consumers: number;
        idleWithoutLoops: { serverCpuMicrosPerSec: number | null; clientCpuMicrosPerSec: number };
        idleWithLoops: {
          serverCpuMicrosPerSec: number | null;
          clientCpuMicrosPerSec: number;
          clientMsgsInPerSec: number;
          clientMsgsOutPerSec: number;
        };
        clientHeapPerLoop: number;
        clientRssPerLoop: number;
        serverRssPerLoop: number | null;
      }
    | undefined;
  if (live) {
    const pct = (micros: number | null) => (micros === null ? "–" : `${(micros / 10_000).toFixed(1)} %`);
    lines.push(
      `${live.consumers} idle per-job consumers: server CPU ${pct(live.idleWithoutLoops.serverCpuMicrosPerSec)} of a core ` +
        `without pull loops, ${pct(live.idleWithLoops.serverCpuMicrosPerSec)} with one loop each; client CPU ` +
        `${pct(live.idleWithLoops.clientCpuMicrosPerSec)}; messages/s in ${live.idleWithLoops.clientMsgsInPerSec}, ` +
        `out ${live.idleWithLoops.clientMsgsOutPerSec}; per loop: client heap ${kib(live.clientHeapPerLoop)}, ` +
        `client RSS ${kib(live.clientRssPerLoop)}, server RSS ${kib(live.serverRssPerLoop)}.`,
      "",
    );
  }
  const actors = plane.actors as Array<{
    machine: string;
    timers: string;
    actors: number;
    heapPerActor: number;
    rssPerActor: number;
    cpuMicrosPerSec: number;
    states: string[];
  }>;
  if (actors.length > 0) {
    lines.push(
      `Idle XState actors (${actors[0]!.actors} per child, after gc):`,
      "",
      "| machine | timers | heap per actor | RSS per actor | CPU while idle | state |",
      "| --- | --- | ---: | ---: | ---: | --- |",
    );
    for (const a of actors) {
      lines.push(
        `| ${a.machine} | ${a.timers} | ${kib(a.heapPerActor)} | ${kib(a.rssPerActor)} | ` +
          `${(a.cpuMicrosPerSec / 10_000).toFixed(1)} % | ${a.states.join(" ")} |`,
      );
    }
    lines.push("");
  }
  return lines;
}
