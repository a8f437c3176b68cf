import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AnyActorRef, InspectionEvent } from "xstate";
import type { Broker } from "../../src/adapters/broker.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import type { JobHandle } from "../../src/api/job-handle.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { jobActorOf } from "../../src/api/runtime-job-handle.ts";
import { updateRecordWith } from "../../src/effects/record-updates.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type JobEvent, jobMachine } from "../../src/machines/job.machine.ts";
import { createMemoryBroker, createTestRuntime, ManualClock } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";
import { transitionRecorder } from "./coverage.ts";
import { fromMachineEvent, initialModel, type JobModel, type OracleInput, stepModel } from "./job.oracle.ts";
import { type JobPath, jobPaths, settings } from "./job.paths.ts";

/**
 * The job machine's generated paths, driven through real runtimes: a real
 * job actor from `rt.jobs.submit` (real submit, feed with its clock, and finalize) on
 * the memory broker with a `ManualClock` and on a nats-server. Each path's
 * steps become what causes them in production: an answer is a results
 * message stored in the broker, a tick is time passing, a cancel is
 * `handle.cancel`, the finalize is the runtime writing the end.
 *
 * The expected job is the reference model (job.oracle.ts) folded over the
 * events the live actor really received (from the inspector), so real
 * timestamps are used; after each step the actor must match it, and once the
 * end is recorded the record read from the broker and the raw results stream
 * must hold what the model says.
 */

interface Backend {
  readonly rt: Runtime;
  readonly broker: Broker;
  /** Job actors' received events, by job id. */
  readonly received: Map<string, JobEvent[]>;
  /** Every results entry stored for the job, duplicates included, read past the runtime. */
  rawResults(queue: string, jobId: string): Promise<unknown[]>;
  /** Lets the job's clock move to `atMs` after its start (memory), or does nothing (NATS: no tick steps). */
  elapse(handle: JobHandle, atMs: number): Promise<void>;
}

const receivedRecorder = () => {
  const received = new Map<string, JobEvent[]>();
  const inspect = (event: InspectionEvent) => {
    if (event.type !== "@xstate.event") return;
    const actor = event.actorRef as AnyActorRef;
    if (!actor.id.startsWith("job:")) return;
    const list = received.get(actor.id.slice(4)) ?? [];
    received.set(actor.id.slice(4), list);
    list.push(event.event as JobEvent);
  };
  return { received, inspect };
};

/** The paths a real runtime can take: submitted, then answers, time, cancel and the end written. */
const runnable = (p: JobPath) =>
  p.events[0]?.type === "submit.committed" &&
  !p.events.some((e) => e.type === "submit.failed" || (e.type === "results.received" && e.reopen));

const all = jobPaths();
const paths = [
  ...all.filter((p) => p.kind === "shortest" && runnable(p)),
  // A stalled job that an answer takes back to running: no shortest path ends like that.
  ...all.filter(
    (p) =>
      p.kind === "extended" &&
      runnable(p) &&
      p.events.at(-2)?.type === "clock.tick" &&
      p.events.at(-1)?.type === "results.received",
  ),
];

const oracleInput = (handle: JobHandle): OracleInput => ({
  total: 3,
  settings,
  now: jobActorOf(handle).getSnapshot().context.startedAt,
});

const modelOf = (b: Backend, handle: JobHandle): JobModel => {
  const input = oracleInput(handle);
  let model = initialModel(input);
  for (const event of b.received.get(handle.id) ?? []) {
    const seen = fromMachineEvent(event as never);
    if (seen) model = stepModel(model, seen, input);
  }
  return model;
};

const top = (value: unknown) => (typeof value === "string" ? value : Object.keys(value as object)[0]);

const compare = (b: Backend, handle: JobHandle, where: string) => {
  const model = modelOf(b, handle);
  const live = jobActorOf(handle).getSnapshot();
  expect(
    {
      status: top(live.value),
      done: live.context.done,
      failed: live.context.failed,
      dead: live.context.dead,
      reason: live.context.reason,
    },
    where,
  ).toEqual({
    status: model.status,
    done: model.done,
    failed: model.failed,
    dead: model.dead,
    reason: model.reason,
  });
  return model;
};

const readRaw = async (broker: Broker, queue: string, jobId: string) => {
  const entries: unknown[] = [];
  const ac = new AbortController();
  await broker.readResults(
    queue,
    jobId,
    (body, pending) => {
      entries.push(...(JSON.parse(body) as unknown[]));
      if (pending === 0) ac.abort();
    },
    ac.signal,
    () => ac.abort(),
  );
  return entries;
};

let queues = 0;

const drive = async (b: Backend, path: JobPath) => {
  const queue = `oracle${++queues}`;
  const handle = await b.rt.jobs.submit({
    queue,
    tasks: [0, 1, 2],
    maxFailures: settings.maxFailures,
    stallAfterMs: settings.stallAfterMs,
    stalledTimeoutMs: settings.stalledTimeoutMs,
  });
  compare(b, handle, "committed");
  const published: unknown[] = [];
  for (const [n, event] of path.events.slice(1).entries()) {
    const where = `step ${n + 2} (${event.type})`;
    const seen = () => (b.received.get(handle.id) ?? []).filter((e) => e.type === "results.received").length;
    if (event.type === "results.received") {
      const before = seen();
      await b.broker.publishResults(queue, handle.id, JSON.stringify(event.entries), `${handle.id}.${n}`);
      published.push(...event.entries);
      if (jobActorOf(handle).getSnapshot().status === "active")
        await waitUntil(() => seen() > before, {
          timeoutMs: 10_000,
          message: `${where}: the answer reached the job`,
        });
    } else if (event.type === "clock.tick") {
      await b.elapse(handle, event.now);
    } else if (event.type === "job.cancel") {
      await handle.cancel(event.reason);
    } else if (event.type === "record.changed") {
      // Another runtime writes the record (its progress, its end, a cancel): the record watch
      // hands it to the job.
      const heard = () => (b.received.get(handle.id) ?? []).filter((e) => e.type === "record.changed").length;
      const before = heard();
      const written = await updateRecordWith(b.broker, handle.id, (r) =>
        r.status === "succeeded" || r.status === "failed"
          ? undefined
          : {
              ...r,
              status: event.status,
              counts: event.counts,
              ...(event.reason ? { reason: event.reason } : {}),
              updatedAt: r.updatedAt + 1,
            },
      );
      if (written && jobActorOf(handle).getSnapshot().status === "active")
        await waitUntil(() => heard() > before, {
          timeoutMs: 10_000,
          message: `${where}: the record reached the job`,
        });
    } else {
      // finalize.settled: the runtime writes the end.
      await recorded(handle);
    }
    const model = compare(b, handle, where);
    if (model.status === "succeeded" || model.status === "failed") {
      // The end is written by the runtime: the record as stored says what the model says.
      await recorded(handle);
      const stored = await b.broker.getRecord(handle.id);
      expect(stored?.record, `${where}: the record`).toMatchObject({
        status: model.status,
        // An end another runtime wrote keeps its writer's counts (the job may have counted more).
        ...(model.adopted ? {} : { counts: { done: model.done, failed: model.failed, dead: model.dead } }),
        ...(model.reason ? { reason: model.reason } : {}),
      });
    }
  }
  // The raw results stream holds every answer stored, duplicates included (the job counts each task once).
  expect(await b.rawResults(queue, handle.id)).toEqual(published);
  if (jobActorOf(handle).getSnapshot().status === "active") {
    await handle.cancel("path over");
    await recorded(handle);
  }
};

/** The runtime stops a job's actor once its end is recorded. */
const recorded = (handle: JobHandle) =>
  waitUntil(() => jobActorOf(handle).getSnapshot().status !== "active", {
    timeoutMs: 10_000,
    message: "the end recorded",
  });

/**
 * Transitions a real runtime does not take in these paths, and why (the
 * idle-actor replays in job.model.test.ts take them all).
 */
const notThroughTheRuntime: Record<string, string> = {
  "job.queuing job.cancel #0": "rt.jobs.submit hands out the handle once committed: nothing to cancel before",
  "job.queuing.submitting submit.failed #0": "a refused submit: job.runtime.model.test.ts takes it",
  "job.queuing.checking always #0": "a resumed job: job-takeover and jobs-restart tests",
  "job.queuing.checking always #1": "a resumed stalled job: stall-resume.test.ts",
  "job.queuing.checking always #2": "a resumed finished job",
  "job.queuing.checking always #3": "a resumed finished job",
  "job.running job.cancel #0":
    "handle.cancel on a committed job is a record write: the job hears record.changed",
  "job.stalled job.cancel #0":
    "handle.cancel on a committed job is a record write: the job hears record.changed",
  "job.succeeded.recorded record.changed #0": "the runtime stops a job's actor once its end is recorded",
  "job.failed.recorded record.changed #0": "the runtime stops a job's actor once its end is recorded",
  "job.succeeded.recording results.received #0":
    "an end's write a redrive refused: a race, redrive-end-race.both.test.ts takes it",
  "job.failed.recording results.received #0":
    "an end's write a redrive refused: a race, redrive-end-race.both.test.ts takes it",
  // The echo of the actor's own end write is no longer sent to it (api/job-actor.ts): only the
  // same end written by another runtime while this one writes it takes these, a race.
  "job.succeeded.recording record.changed #0": "another runtime's same end, during this one's write: a race",
  "job.failed.recording record.changed #0": "another runtime's same end, during this one's write: a race",
  // Its own writes, the commit's included even when its echo comes after the end's write, are
  // not sent back to it either (RecordSeen.before): a live record it hears is another runtime's.
  "job record.changed #2":
    "a live record another runtime wrote (a supervisor's progress, as a watcher in another runtime hears it)",
};

describe("job paths through a runtime on the memory broker (ManualClock), against the oracle", () => {
  const coverage = transitionRecorder(jobMachine);
  let b: Backend;
  let clock: ManualClock;
  beforeAll(async () => {
    clock = new ManualClock();
    const { received, inspect } = receivedRecorder();
    const broker = createMemoryBroker({ clock });
    const rt = await createTestRuntime({
      clock,
      broker,
      inspect: {
        inspect: (e: InspectionEvent) => {
          inspect(e);
          coverage.inspect(e);
        },
      },
    });
    const settle = async () => {
      for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
    };
    b = {
      rt,
      broker,
      received,
      rawResults: (queue, jobId) => readRaw(broker, queue, jobId),
      async elapse(handle, atMs) {
        const start = jobActorOf(handle).getSnapshot().context.startedAt;
        // The job's clock ticks every quarter of stallAfterMs: step through them.
        while (clock.now() < start + atMs && jobActorOf(handle).getSnapshot().status === "active") {
          clock.advance(Math.min(250, start + atMs - clock.now()));
          await settle();
        }
      },
    };
  });
  afterAll(async () => {
    await b?.rt.stop();
  });

  const driven = new Set<JobPath>();
  it.each(paths.map((p) => [p.name, p] as const))("%s", async (_name, path) => {
    await drive(b, path);
    driven.add(path);
  });

  it("the runtime paths take every transition but the listed ones", async () => {
    // The paths no test above drove (run alone, or filtered) are driven here: no test order needed.
    for (const path of paths) if (!driven.has(path)) await drive(b, path);
    expect(coverage.missing(notThroughTheRuntime)).toEqual([]);
  });
});

describe("job paths through a runtime on NATS (real time, no ticks), against the oracle", () => {
  let server: NatsServerHandle;
  let b: Backend;
  let stopCore: () => Promise<void> = async () => undefined;
  let nc: NatsConnection;
  // On a real clock the stall thresholds of the paths cannot be replayed step by step: the
  // paths without a tick, with the stall far away.
  const untimed = paths.filter((p) => !p.events.some((e) => e.type === "clock.tick"));
  beforeAll(async () => {
    server = await startNatsServer();
    const { received, inspect } = receivedRecorder();
    const core = await createRuntimeCore({ servers: server.url, logger: silentLogger() });
    const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "oracle" });
    const rt = await createRuntime({ broker, logger: silentLogger(), inspect: { inspect } });
    nc = await connect({ servers: server.url });
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    b = {
      rt,
      broker,
      received,
      rawResults: async (queue, jobId) => {
        const subject = `jetstate.results.${queue}.${jobId}`;
        const info = await jsm.streams.info("jetstate_results", { subjects_filter: subject });
        const stored = info.state.subjects?.[subject] ?? 0;
        if (stored === 0) return [];
        const { name } = await jsm.consumers.add("jetstate_results", {
          filter_subject: subject,
          ack_policy: AckPolicy.None,
          inactive_threshold: 60_000_000_000,
        });
        const consumer = await js.consumers.get("jetstate_results", name);
        const entries: unknown[] = [];
        for (let n = 0; n < stored; n++) {
          const msg = await consumer.next({ expires: 5_000 });
          if (!msg) throw new Error(`results message ${n + 1} of ${stored} not delivered`);
          entries.push(...msg.json<unknown[]>());
        }
        return entries;
      },
      elapse: async () => {
        throw new Error("no ticks on NATS");
      },
    };
    stopCore = () => core.stop();
  });
  afterAll(async () => {
    await b?.rt.stop();
    await stopCore();
    await nc?.close();
    await server?.dispose();
  });

  it.each(untimed.map((p) => [p.name, p] as const))("%s", async (_name, path) => {
    await drive(b, path);
  });
});
