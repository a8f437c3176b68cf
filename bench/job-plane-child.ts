/**
 * The parts of `bench/job-plane.ts` that measure a heap: each runs in its own
 * `node --expose-gc --import tsx` process, so nothing else is in it, and
 * prints one JSON line on stdout.
 *
 *   live <url> <server pid> <count>
 *       `count` durable per-job consumers on a work-queue stream (file
 *       storage), idle; server CPU over a window without pull loops, then
 *       one pull loop on each (jetstate's settings: 64 messages, expires
 *       3 s, heartbeat 1 s) and the same window again: server CPU and RSS,
 *       client CPU, heap and messages per second.
 *   actors <tiny|job>:<none|per|per3|shared> <count>
 *       `count` idle XState actors of a tiny two-state machine or of
 *       jetstate's `jobMachine` (stub actors: the submit resolves at once,
 *       no results ever come), with no timer, one or three `setInterval`s
 *       each (1 s: the first ticks the actor, the others do nothing, as a job's
 *       lease and lost-task timers mostly do), or one shared interval that
 *       ticks every actor. Heap and
 *       RSS per actor after gc, and client CPU per second of idling.
 */
import { readFileSync } from "node:fs";
import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import {
  type AnyActorRef,
  type AnyEventObject,
  assign,
  createActor,
  fromCallback,
  fromPromise,
  setup,
} from "xstate";
import type { FinalizeInput } from "../src/kernel/job-record.ts";
import { type JobEvent, jobMachine } from "../src/machines/job.machine.ts";
import { defaultSettings as jobSettings } from "../test/harness/finished-records.ts";
import { cpuMicrosSince, round, sleep } from "./lib/stats.ts";
import { uniqueName } from "./lib/tasks.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("job-plane-child needs node --expose-gc");

const settledHeap = async () => {
  for (let k = 0; k < 3; k++) {
    gc();
    await sleep(20);
  }
  // Read in the same turn as the last gc: an interval firing in between (10,000 actors
  // ticking) would leave megabytes of garbage in the reading.
  gc();
  const { rss, heapUsed } = process.memoryUsage();
  return { rss, heapUsed };
};

const ticksPerSecond = 100; // USER_HZ on Linux

/** The server's CPU time so far in µs and its RSS in bytes (Linux /proc); undefined without a pid. */
const serverStat = (pid: number): { cpuMicros: number; rss: number } | undefined => {
  if (!pid) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const cpuMicros = ((Number(fields[11]) + Number(fields[12])) / ticksPerSecond) * 1_000_000;
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
    return { cpuMicros, rss: rssKb * 1024 };
  } catch {
    return undefined;
  }
};

const windowMs = 5000;

const liveConsumers = async (url: string, pid: number, count: number) => {
  const nc = await connect({ servers: url, name: "bench-plane-live", noAsyncTraces: true });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const prefix = uniqueName("live", 0);
  const stream = `${prefix}_tasks_q`;
  await jsm.streams.add({
    name: stream,
    subjects: [`${prefix}.tasks.q.>`],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
  });
  const created = performance.now();
  for (let k = 0; k < count; k++) {
    await jsm.consumers.add(stream, {
      durable_name: `j${k}`,
      filter_subject: `${prefix}.tasks.q.j${k}`,
      ack_policy: AckPolicy.Explicit,
      ack_wait: 30_000_000_000,
      max_deliver: 5,
      max_ack_pending: 20_000,
      deliver_policy: DeliverPolicy.All,
    });
  }
  const createSeconds = (performance.now() - created) / 1000;
  /** Server and client CPU (µs per second), server RSS and messages per second over one window. */
  const window = async () => {
    const s0 = serverStat(pid);
    const c0 = process.cpuUsage();
    const m0 = { ...nc.stats() };
    await sleep(windowMs);
    const s1 = serverStat(pid);
    const m1 = nc.stats();
    const perSecond = (value: number) => Math.round(value / (windowMs / 1000));
    return {
      serverCpuMicrosPerSec: s0 && s1 ? perSecond(s1.cpuMicros - s0.cpuMicros) : null,
      serverRss: s1?.rss ?? null,
      clientCpuMicrosPerSec: perSecond(cpuMicrosSince(c0)),
      clientMsgsInPerSec: perSecond(m1.inMsgs - m0.inMsgs),
      clientMsgsOutPerSec: perSecond(m1.outMsgs - m0.outMsgs),
    };
  };
  await sleep(500);
  const before = await settledHeap();
  const idleWithoutLoops = await window();
  const loops: ConsumerMessages[] = [];
  const reading: Promise<void>[] = [];
  for (let k = 0; k < count; k++) {
    const consumer = await js.consumers.get(stream, `j${k}`);
    const messages = await consumer.consume({
      max_messages: 64,
      threshold_messages: 32,
      expires: 3000,
      idle_heartbeat: 1000,
      abort_on_missing_resource: true,
    });
    loops.push(messages);
    reading.push(
      (async () => {
        for await (const m of messages) m.ack();
      })().catch(() => undefined),
    );
  }
  await sleep(2000);
  const after = await settledHeap();
  const idleWithLoops = await window();
  for (const messages of loops) await messages.close();
  await Promise.all(reading);
  await jsm.streams.delete(stream);
  await nc.close();
  return {
    mode: "live",
    consumers: count,
    createSeconds: round(createSeconds, 2),
    idleWithoutLoops,
    idleWithLoops,
    clientHeapPerLoop: Math.round((after.heapUsed - before.heapUsed) / count),
    clientRssPerLoop: Math.round((after.rss - before.rss) / count),
    serverRssPerLoop:
      idleWithLoops.serverRss !== null && idleWithoutLoops.serverRss !== null
        ? Math.round((idleWithLoops.serverRss - idleWithoutLoops.serverRss) / count)
        : null,
  };
};

// ---------------------------------------------------------------------------
// Idle actors

type Timers = "none" | "per" | "per3" | "shared";

const noop = () => undefined;

/** The shared interval's subscribers: one timer for every actor. */
const tickers = new Set<() => void>();
let sharedTimer: NodeJS.Timeout | undefined;

/** A callback actor's body sending `event` every second, in the way `timers` says. */
const ticking =
  (timers: Timers, event: () => AnyEventObject) =>
  ({ sendBack }: { sendBack: (event: AnyEventObject) => void }) => {
    if (timers === "none") return () => undefined;
    if (timers === "shared") {
      sharedTimer ??= setInterval(() => {
        for (const tick of tickers) tick();
      }, 1000);
      const tick = () => sendBack(event());
      tickers.add(tick);
      return () => tickers.delete(tick);
    }
    // per3: the actor's clock, and two timers that send it nothing (a job's lease renewal and
    // lost-task check are per-job timers of that kind in jetstate).
    const handles = [setInterval(() => sendBack(event()), 1000)];
    if (timers === "per3") handles.push(setInterval(noop, 1000), setInterval(noop, 1000));
    return () => {
      for (const h of handles) clearInterval(h);
    };
  };

const tinyMachine = (timers: Timers) =>
  setup({
    types: {
      context: {} as { ticks: number },
      events: {} as { type: "start" } | { type: "tick" } | { type: "stop" },
    },
    actors: { clock: fromCallback(ticking(timers, () => ({ type: "tick" }))) },
  }).createMachine({
    id: "tiny",
    context: { ticks: 0 },
    initial: "idle",
    invoke: { src: "clock" },
    states: {
      idle: { on: { start: "running" } },
      running: {
        on: { tick: { actions: assign({ ticks: ({ context }) => context.ticks + 1 }) }, stop: "done" },
      },
      done: { type: "final" },
    },
  });

const stubJobMachine = () =>
  jobMachine.provide({
    actors: {
      submit: fromPromise<number | undefined, { jobId: string }>(async () => Date.now()),
      finalize: fromPromise<void, FinalizeInput>(async () => undefined),
    },
  });

const idleActors = async (mode: string, count: number) => {
  const [kind, timers] = mode.split(":") as ["tiny" | "job", Timers];
  if (!["tiny", "job"].includes(kind) || !["none", "per", "per3", "shared"].includes(timers))
    throw new Error(`unknown actors mode ${mode}`);
  const tiny = tinyMachine(timers);
  const job = stubJobMachine();
  const start = (k: number): AnyActorRef => {
    if (kind === "tiny") {
      const actor = createActor(tiny).start();
      actor.send({ type: "start" });
      return actor;
    }
    const actor = createActor(job, {
      input: { jobId: `job-${k}`, queue: "q", total: 1, settings: jobSettings, now: Date.now() },
    }).start();
    // The job's feed reads nothing here: it only ticks, beside the actor, as the runtime's does.
    const stopTicking = ticking(timers, () => ({ type: "clock.tick", now: Date.now() }))({
      sendBack: (event) => actor.send(event as JobEvent),
    });
    actor.subscribe({ complete: stopTicking });
    return actor;
  };
  // A warm-up: every lazily made part of xstate exists before the baseline.
  for (let k = 0; k < 200; k++) start(k).stop();
  await sleep(100);
  const before = await settledHeap();
  const actors: AnyActorRef[] = [];
  for (let k = 0; k < count; k++) actors.push(start(k));
  await sleep(2200); // two ticks: every timer has fired
  const states = new Set(actors.map((a) => JSON.stringify(a.getSnapshot().value)));
  const after = await settledHeap();
  const c0 = process.cpuUsage();
  await sleep(windowMs);
  const cpuMicrosPerSec = Math.round(cpuMicrosSince(c0) / (windowMs / 1000));
  for (const actor of actors) actor.stop();
  if (sharedTimer) clearInterval(sharedTimer);
  return {
    mode: "actors",
    machine: kind,
    timers,
    actors: count,
    states: [...states],
    heapPerActor: Math.round((after.heapUsed - before.heapUsed) / count),
    rssPerActor: Math.round((after.rss - before.rss) / count),
    cpuMicrosPerSec,
  };
};

const [mode, ...args] = process.argv.slice(2);
const result =
  mode === "live"
    ? await liveConsumers(args[0] ?? "", Number(args[1]), Number(args[2] ?? 1000))
    : mode === "actors"
      ? await idleActors(args[0] ?? "", Number(args[1] ?? 10_000))
      : undefined;
if (!result) throw new Error("usage: job-plane-child.ts live <url> <pid> <count> | actors <mode> <count>");
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
