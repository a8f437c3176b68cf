import { getShortestPaths } from "@xstate/graph";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AnyActorRef, type InspectionEvent, transition, waitFor } from "xstate";
import type { Broker } from "../../src/adapters/broker.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import type { JobHandle, JobSnapshot } from "../../src/api/job-handle.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { jobActorOf } from "../../src/api/runtime-job-handle.ts";
import type { SubmitRequest } from "../../src/effects/plan-submit.ts";
import { PermanentBrokerError, PermanentError } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { jobMachine } from "../../src/machines/job.machine.ts";
import type { JobInput } from "../../src/machines/job-context.ts";
import { createMemoryBroker, createTestRuntime, ManualClock } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";
import { events, input, serializeState } from "./job.paths.ts";

/**
 * The job machine's routes, taken by real job actors (issue #9).
 *
 * The routes come from the machine: the shortest path to every (state,
 * counts) pair, with the events of test/model/job.model.test.ts, each
 * extended by every event twice (two more steps reach stalled → running →
 * succeeded, which no shortest path takes: a resumed `running` is the same
 * state as one that never stalled). A route is the sequence of top-level
 * states a path goes through and, for a finished job, what ended it.
 *
 * Each route is then taken by a scenario on a real runtime: real job actors,
 * real workers, real submit/finalize, on the memory broker with a
 * `ManualClock` and on a nats-server with real time and short thresholds.
 * The sequence of top-level states the live actor went through (every
 * snapshot, from the runtime's inspector, and from `jobActorOf(handle).subscribe`
 * once the handle exists) must be the scenario's route.
 */

// ---- the model ----

type Top = "queuing" | "running" | "stalled" | "succeeded" | "failed";
type Ending = "none" | "submit" | "cancel" | "stall" | "tolerance";

const topState = (value: unknown): Top =>
  (typeof value === "string" ? value : Object.keys(value as object)[0]) as Top;

const endingOf = (reason: string | null | undefined): Ending =>
  !reason
    ? "none"
    : reason.startsWith("submit failed")
      ? "submit"
      : reason.startsWith("cancelled")
        ? "cancel"
        : reason.startsWith("stalled")
          ? "stall"
          : /tasks failed or died/.test(reason)
            ? "tolerance"
            : (() => {
                throw new Error(`unknown reason: ${reason}`);
              })();

const routeKey = (states: readonly Top[], ending: Ending) => `${states.join(" → ")} | ${ending}`;

/** Every route the machine takes from `start`: finished ones with their ending, open ones as a start. */
const modelRoutes = (start: JobInput) => {
  const paths = getShortestPaths(jobMachine, {
    events,
    input: start,
    serializeState,
  } as never);
  let frontier = paths.map((p) => ({ states: p.steps.map((s) => s.state), last: p.state }));
  const all = [...frontier];
  for (let extra = 0; extra < 2; extra++) {
    frontier = frontier.flatMap((route) =>
      route.last.status !== "active"
        ? []
        : events.map((event) => {
            const [next] = transition(jobMachine, route.last, event);
            return { states: [...route.states, next], last: next };
          }),
    );
    all.push(...frontier);
  }
  const finished = new Set<string>();
  const open = new Map<string, Top[]>();
  for (const route of all) {
    const states: Top[] = [];
    for (const s of route.states) {
      const top = topState(s.value);
      if (states.at(-1) !== top) states.push(top);
    }
    const end = states.at(-1)!;
    if (end === "succeeded" || end === "failed")
      finished.add(routeKey(states, endingOf(route.last.context.reason)));
    else open.set(states.join(" → "), states);
  }
  return { finished, open: [...open.values()] };
};

const fresh = modelRoutes(input);
const resumed = modelRoutes({ ...input, resumeFrom: "running" });

// ---- the runtime side ----

/** Top-level states of every job actor the runtime starts, from its first snapshot on (the inspector sees them all). */
const jobStateRecorder = () => {
  const sessions = new Map<string, { id: string; states: Top[] }>();
  return {
    inspect: (event: InspectionEvent) => {
      if (event.type !== "@xstate.snapshot") return;
      const actor = event.actorRef as AnyActorRef;
      if (!actor.id.startsWith("job:")) return;
      const top = topState((event.snapshot as { value?: unknown }).value);
      const session = sessions.get(actor.sessionId) ?? { id: actor.id, states: [] as Top[] };
      sessions.set(actor.sessionId, session);
      if (session.states.at(-1) !== top) session.states.push(top);
    },
    /** One list per actor that supervised the job, oldest first. */
    of: (jobId: string) => [...sessions.values()].filter((s) => s.id === `job:${jobId}`).map((s) => s.states),
    all: () => [...sessions.values()],
  };
};
type Recorder = ReturnType<typeof jobStateRecorder>;

interface Watched {
  readonly handle: JobHandle;
  /** What `jobActorOf(handle).subscribe` saw, from the state the handle was handed over in. */
  readonly seen: Top[];
}

const watch = (handle: JobHandle): Watched => {
  const seen = [topState(jobActorOf(handle).getSnapshot().value)];
  jobActorOf(handle).subscribe((s) => {
    const top = topState(s.value);
    if (seen.at(-1) !== top) seen.push(top);
  });
  return { handle, seen };
};

interface Backend {
  readonly kind: "memory" | "nats";
  readonly rt: Runtime;
  readonly recorder: Recorder;
  /** Thresholds for the jobs that stall here: manual milliseconds on memory, real ones on NATS. */
  readonly stall: { readonly stallAfterMs: number; readonly stalledTimeoutMs: number };
  /** Lets the job's own time pass until its clock moved it to `state`. */
  elapseUntil(handle: JobHandle, state: Top): Promise<void>;
  /** A runtime whose broker refuses to store tasks, with its own recorder. */
  refusing(): Promise<{ rt: Runtime; recorder: Recorder; stop(): Promise<void> }>;
}

/** Waits for an answer (not time) to move the job: no clock moves on memory. */
const reach = (handle: JobHandle, state: Top) =>
  waitFor(jobActorOf(handle), (s) => topState(s.value) === state, { timeout: 10_000 });

const submit = async (b: Backend, request: SubmitRequest<number, number>) =>
  watch(await b.rt.jobs.submit(request));

/** A gate the test opens by hand; a handler waiting at it gives up when its task is aborted. */
const gate = () => {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  const pass = (signal: AbortSignal) =>
    Promise.race([
      opened,
      new Promise<never>((_, reject) =>
        signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true }),
      ),
    ]);
  return { pass, open };
};

/** A broker that takes everything but the tasks of a submit: the submit fails and is rolled back. */
const refusingTasks = (broker: Broker): Broker =>
  new Proxy(broker, {
    get(target, key) {
      if (key === "publishTasks")
        return () =>
          Promise.reject(
            new PermanentBrokerError({ operation: "job.tasks.publish", message: "publish refused" }),
          );
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });

interface Outcome {
  readonly job: Watched;
  readonly final: JobSnapshot;
  /** A job redriven after its end is supervised by a new actor: its handle and end. */
  readonly again?: { readonly job: Watched; readonly final: JobSnapshot };
}

interface Scenario {
  readonly name: string;
  /** The route the live actor must take, and what ends it. */
  readonly route: readonly Top[];
  readonly ending: Ending;
  /** After a redrive of the finished job: the new actor's route (a resumed job starts in running). */
  readonly afterRedrive?: { readonly route: readonly Top[]; readonly ending: Ending };
  run(b: Backend, queue: string): Promise<Outcome>;
}

const scenarios: Scenario[] = [
  {
    name: "a worker answers every task",
    route: ["queuing", "running", "succeeded"],
    ending: "none",
    async run(b, queue) {
      const job = await submit(b, { queue, tasks: [1, 2, 3] });
      const worker = b.rt.workers.start<number, number>({ queue, handler: (t) => t.payload * 2 });
      const final = await job.handle.done();
      await worker.stop();
      expect(final).toMatchObject({ status: "succeeded", done: 3, failed: 0, dead: 0 });
      return { job, final };
    },
  },
  {
    name: "no worker: stalled; a worker starts, one answer resumes it, the last one ends it",
    route: ["queuing", "running", "stalled", "running", "succeeded"],
    ending: "none",
    async run(b, queue) {
      const job = await submit(b, { queue, tasks: [0, 1], stallAfterMs: b.stall.stallAfterMs });
      await b.elapseUntil(job.handle, "stalled");
      const second = gate();
      const worker = b.rt.workers.start<number, number>({
        queue,
        handler: async (t, ctx) => {
          if (t.index === 1) await second.pass(ctx.signal);
          return t.index;
        },
      });
      await reach(job.handle, "running");
      second.open();
      const final = await job.handle.done();
      await worker.stop();
      expect(final).toMatchObject({ status: "succeeded", done: 2 });
      return { job, final };
    },
  },
  {
    name: "stalled; its only task is answered: succeeded straight from stalled",
    route: ["queuing", "running", "stalled", "succeeded"],
    ending: "none",
    async run(b, queue) {
      const job = await submit(b, { queue, tasks: [0], stallAfterMs: b.stall.stallAfterMs });
      await b.elapseUntil(job.handle, "stalled");
      const worker = b.rt.workers.start<number, number>({ queue, handler: (t) => t.index });
      const final = await job.handle.done();
      await worker.stop();
      expect(final).toMatchObject({ status: "succeeded", done: 1 });
      return { job, final };
    },
  },
  {
    name: "stalled longer than stalledTimeoutMs: failed",
    route: ["queuing", "running", "stalled", "failed"],
    ending: "stall",
    async run(b, queue) {
      const job = await submit(b, { queue, tasks: [0], ...b.stall });
      await b.elapseUntil(job.handle, "stalled");
      await b.elapseUntil(job.handle, "failed");
      const final = await job.handle.done();
      expect(final).toMatchObject({ status: "failed", done: 0 });
      return { job, final };
    },
  },
  {
    name: "stalled; its only task fails permanently: failed by its tolerance",
    route: ["queuing", "running", "stalled", "failed"],
    ending: "tolerance",
    async run(b, queue) {
      const job = await submit(b, { queue, tasks: [0], stallAfterMs: b.stall.stallAfterMs });
      await b.elapseUntil(job.handle, "stalled");
      const worker = b.rt.workers.start<number, number>({
        queue,
        handler: () => {
          throw new PermanentError("image not found");
        },
      });
      const final = await job.handle.done();
      await worker.stop();
      expect(final).toMatchObject({ status: "failed", failed: 1 });
      return { job, final };
    },
  },
  {
    name: "stalled, then cancelled",
    route: ["queuing", "running", "stalled", "failed"],
    ending: "cancel",
    async run(b, queue) {
      const job = await submit(b, { queue, tasks: [0], stallAfterMs: b.stall.stallAfterMs });
      await b.elapseUntil(job.handle, "stalled");
      const final = await job.handle.cancel("nobody is pulling");
      expect(final).toMatchObject({ status: "failed", reason: "cancelled: nobody is pulling" });
      return { job, final };
    },
  },
  {
    name: "stalled; an answer resumes it; cancelled while running",
    route: ["queuing", "running", "stalled", "running", "failed"],
    ending: "cancel",
    async run(b, queue) {
      const job = await submit(b, { queue, tasks: [0, 1], stallAfterMs: b.stall.stallAfterMs });
      await b.elapseUntil(job.handle, "stalled");
      const worker = b.rt.workers.start<number, number>({
        queue,
        handler: (t, ctx) =>
          t.index === 0
            ? 0
            : new Promise((_, reject) =>
                ctx.signal.addEventListener("abort", () => reject(new Error("aborted"))),
              ),
      });
      await reach(job.handle, "running");
      const final = await job.handle.cancel("enough");
      await worker.stop();
      expect(final).toMatchObject({ status: "failed", done: 1, reason: "cancelled: enough" });
      return { job, final };
    },
  },
  {
    name: "a PermanentError beyond the failure tolerance",
    route: ["queuing", "running", "failed"],
    ending: "tolerance",
    async run(b, queue) {
      const job = await submit(b, { queue, tasks: [0, 1], maxFailures: 0 });
      const attempts: number[] = [];
      const worker = b.rt.workers.start<number, number>({
        queue,
        handler: (t) => {
          if (t.index === 0) return 0;
          attempts.push(t.attempt);
          throw new PermanentError("broken input");
        },
      });
      const final = await job.handle.done();
      await worker.stop();
      expect(final).toMatchObject({ status: "failed", done: 1, failed: 1, dead: 0 });
      expect(attempts).toEqual([1]); // never redelivered
      return { job, final };
    },
  },
  {
    name: "a task that always fails transiently dies (maxDeliver 2, backoff [0]): beyond the tolerance",
    route: ["queuing", "running", "failed"],
    ending: "tolerance",
    async run(b, queue) {
      const { job, final, attempts } = await dyingTask(b, queue, 0);
      expect(final).toMatchObject({ status: "failed", done: 1, failed: 0, dead: 1 });
      expect(attempts).toEqual([1, 2]);
      expect(await b.rt.jobs.deadLetters(job.handle.id)).toMatchObject([{ index: 1, deliveries: 2 }]);
      return { job, final };
    },
  },
  {
    name: "a task that always fails transiently dies: within the tolerance, succeeded",
    route: ["queuing", "running", "succeeded"],
    ending: "none",
    async run(b, queue) {
      const { job, final, attempts } = await dyingTask(b, queue, 0.5);
      expect(final).toMatchObject({ status: "succeeded", done: 1, failed: 0, dead: 1 });
      expect(attempts).toEqual([1, 2]);
      return { job, final };
    },
  },
  {
    name: "redriven while running: the dead task runs again and the job succeeds",
    route: ["queuing", "running", "succeeded"],
    ending: "none",
    async run(b, queue) {
      const job = await submit(b, { queue, tasks: [0, 1], maxDeliver: 2, backoff: [0] });
      const first = gate();
      let healed = false;
      const worker = b.rt.workers.start<number, number>({
        queue,
        handler: async (t, ctx) => {
          if (t.index === 0)
            await first.pass(ctx.signal); // keeps the job running meanwhile
          else if (!healed) throw new Error("upstream busy");
          return t.index;
        },
      });
      await waitFor(jobActorOf(job.handle), (s) => s.context.dead === 1, { timeout: 10_000 });
      healed = true;
      const redriven = await b.rt.jobs.redrive(job.handle.id);
      expect(jobActorOf(redriven)).toBe(jobActorOf(job.handle)); // the same supervision goes on
      await waitFor(jobActorOf(job.handle), (s) => s.context.done === 1 && s.context.dead === 0, {
        timeout: 10_000,
      });
      first.open();
      const final = await job.handle.done();
      await worker.stop();
      expect(final).toMatchObject({ status: "succeeded", done: 2, failed: 0, dead: 0 });
      return { job, final };
    },
  },
  {
    name: "failed by a dead task, redriven after its end: a new actor runs it to success",
    route: ["queuing", "running", "failed"],
    ending: "tolerance",
    afterRedrive: { route: ["running", "succeeded"], ending: "none" },
    async run(b, queue) {
      const job = await submit(b, { queue, tasks: [0], maxDeliver: 2, backoff: [0] });
      const flaky = b.rt.workers.start<number, number>({
        queue,
        handler: () => {
          throw new Error("upstream busy");
        },
      });
      const final = await job.handle.done();
      await flaky.stop();
      expect(final).toMatchObject({ status: "failed", dead: 1 });
      const again = watch(await b.rt.jobs.redrive(job.handle.id));
      const healthy = b.rt.workers.start<number, number>({ queue, handler: (t) => t.index });
      const end = await again.handle.done();
      await healthy.stop();
      expect(end).toMatchObject({ status: "succeeded", done: 1, dead: 0 });
      return { job, final, again: { job: again, final: end } };
    },
  },
  {
    name: "cancelled while a worker holds its tasks",
    route: ["queuing", "running", "failed"],
    ending: "cancel",
    async run(b, queue) {
      const job = await submit(b, { queue, tasks: [0, 1, 2] });
      let started = 0;
      let aborted = 0;
      const worker = b.rt.workers.start<number, number>({
        queue,
        concurrency: 2,
        handler: (_t, ctx) => {
          started++;
          return new Promise((_, reject) =>
            ctx.signal.addEventListener("abort", () => {
              aborted++;
              reject(new Error("aborted"));
            }),
          );
        },
      });
      await waitUntil(() => started === 2, { timeoutMs: 10_000, message: "two tasks in flight" });
      const final = await job.handle.cancel("user changed their mind");
      await waitUntil(() => aborted === 2, { timeoutMs: 10_000, message: "handlers aborted" });
      await worker.stop();
      expect(final).toMatchObject({ status: "failed", reason: "cancelled: user changed their mind" });
      return { job, final };
    },
  },
];

/** One task answers, the other always fails transiently and dies on its second delivery. */
const dyingTask = async (b: Backend, queue: string, maxFailures: number) => {
  const job = await submit(b, { queue, tasks: [0, 1], maxDeliver: 2, backoff: [0], maxFailures });
  const attempts: number[] = [];
  const worker = b.rt.workers.start<number, number>({
    queue,
    handler: (t) => {
      if (t.index === 0) return 0;
      attempts.push(t.attempt);
      throw new Error("upstream busy");
    },
  });
  const final = await job.handle.done();
  await worker.stop();
  return { job, final, attempts };
};

/**
 * The one route no scenario takes: a job cancelled while it is still being
 * submitted. `jobs.submit` hands out the handle only once the job is
 * committed (running), so the public API has nothing to cancel it with
 * before; job.model.test.ts covers it on the machine alone.
 */
const notThroughTheApi = new Set([routeKey(["queuing", "failed"], "cancel")]);

/** The submit that fails: the runtime's broker refuses the tasks, the job is rolled back. */
const submitRefused = {
  name: "the broker refuses the tasks: the submit fails and is rolled back",
  route: ["queuing", "failed"] as Top[],
  ending: "submit" as Ending,
};

const covered = [
  ...scenarios.map((s) => routeKey(s.route, s.ending)),
  routeKey(submitRefused.route, submitRefused.ending),
];

describe("job routes generated from the machine", () => {
  it("every finished route is taken by a scenario (but one), every open one starts one", () => {
    expect([...fresh.finished].filter((k) => !covered.includes(k) && !notThroughTheApi.has(k))).toEqual([]);
    const routes = [...scenarios.map((s) => s.route), submitRefused.route];
    for (const open of fresh.open) {
      expect(
        routes.some((r) => open.every((state, n) => r[n] === state)),
        open.join(" → "),
      ).toBe(true);
    }
  });

  it("every scenario's route is one the machine takes", () => {
    for (const key of covered) expect([...fresh.finished]).toContain(key);
    for (const s of scenarios)
      if (s.afterRedrive)
        expect([...resumed.finished]).toContain(routeKey(s.afterRedrive.route, s.afterRedrive.ending));
  });
});

let queues = 0;

const replay = async (b: Backend, scenario: Scenario) => {
  const queue = `route${++queues}`;
  const { job, final, again } = await scenario.run(b, queue);
  const [first, second, ...more] = b.recorder.of(job.handle.id);
  expect(first).toEqual(scenario.route);
  expect(endingOf(final.reason)).toBe(scenario.ending);
  // The handle arrives once the job is committed: it saw the same route from there on.
  expect(["queuing", ...job.seen]).toEqual(first);
  if (scenario.afterRedrive) {
    expect(second).toEqual(scenario.afterRedrive.route);
    expect(again?.job.seen).toEqual(second);
    expect(endingOf(again?.final.reason)).toBe(scenario.afterRedrive.ending);
  } else expect(second).toBeUndefined();
  expect(more).toEqual([]);
};

const replayRefused = async (b: Backend) => {
  const refusing = await b.refusing();
  try {
    const error = await refusing.rt.jobs.submit({ queue: "refused", tasks: [1] }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    // The caller gets the typed error the submit failed with; the record says why it ended.
    expect(error).toMatchObject({ _tag: "PermanentBrokerError", message: "publish refused" });
    const {
      jobs: [refused],
    } = await refusing.rt.jobs.list({ queue: "refused" });
    expect(endingOf(refused?.reason)).toBe(submitRefused.ending);
    const sessions = refusing.recorder.all();
    expect(sessions.map((s) => s.states)).toEqual([submitRefused.route]);
    // Rolled back before the submit rejected.
    expect((await refusing.rt.jobs.list({ queue: "refused" })).jobs).toMatchObject([
      { status: "failed", phase: "rolledBack" },
    ]);
  } finally {
    await refusing.stop();
  }
};

/** Lets what the clock released run: leases reach their consumers, results their readers. */
const settle = async () => {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
};

describe("job routes on the memory broker (ManualClock)", () => {
  const memory = async (): Promise<Backend & { clock: ManualClock }> => {
    const clock = new ManualClock();
    const recorder = jobStateRecorder();
    const rt = await createTestRuntime({ clock, inspect: recorder });
    const stall = { stallAfterMs: 1000, stalledTimeoutMs: 3000 };
    const tickMs = Math.max(20, Math.min(1000, stall.stallAfterMs / 4)); // the job actor's clock
    return {
      kind: "memory",
      rt,
      recorder,
      clock,
      stall,
      async elapseUntil(handle, state) {
        for (let ticks = 0; topState(jobActorOf(handle).getSnapshot().value) !== state; ticks++) {
          if (ticks > 100) throw new Error(`the job did not reach ${state} in 100 ticks`);
          clock.advance(tickMs);
          await settle();
        }
        // Time goes on after the tick that moved the job, as it does on a real clock.
        clock.advance(1);
      },
      async refusing() {
        const own = jobStateRecorder();
        const refusing = await createTestRuntime({
          clock,
          inspect: own,
          broker: refusingTasks(createMemoryBroker({ clock })),
        });
        return { rt: refusing, recorder: own, stop: () => refusing.stop() };
      },
    };
  };

  it.each(scenarios.map((s) => [s.name, s] as const))("%s", async (_name, scenario) => {
    const b = await memory();
    try {
      await replay(b, scenario);
    } finally {
      await b.rt.stop();
    }
    expect(b.clock.pending).toBe(0); // stopped: no lease, delay or job clock left behind
  });

  it(submitRefused.name, async () => {
    const b = await memory();
    try {
      await replayRefused(b);
    } finally {
      await b.rt.stop();
    }
  });
});

/**
 * The same scenarios on a nats-server, in real time: every one is fast there
 * with thresholds of half a second (the stall scenarios take a second or
 * two). The two that race the stall clock (resumed, then the next answer or
 * the cancel) act the moment the answer moved the job, far inside 500 ms.
 */
describe("job routes on NATS (real time)", () => {
  let server: NatsServerHandle;
  let b: Backend;
  beforeAll(async () => {
    server = await startNatsServer();
    const recorder = jobStateRecorder();
    const rt = await createRuntime({ servers: server.url, logger: silentLogger(), inspect: recorder });
    b = {
      kind: "nats",
      rt,
      recorder,
      stall: { stallAfterMs: 500, stalledTimeoutMs: 500 },
      elapseUntil: async (handle, state) => {
        await waitFor(jobActorOf(handle), (s) => topState(s.value) === state, { timeout: 10_000 });
      },
      async refusing() {
        // The NATS broker on a connection of its own, behind a proxy that refuses the tasks.
        const core = await createRuntimeCore({ servers: server.url, logger: silentLogger() });
        const own = jobStateRecorder();
        const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "refusing" });
        const refusing = await createRuntime({
          broker: refusingTasks(broker),
          logger: silentLogger(),
          inspect: own,
        });
        return {
          rt: refusing,
          recorder: own,
          stop: async () => {
            await refusing.stop();
            await core.stop();
          },
        };
      },
    };
  });
  afterAll(async () => {
    await b?.rt.stop();
    await server?.dispose();
  });

  it.each(scenarios.map((s) => [s.name, s] as const))("%s", async (_name, scenario) => {
    await replay(b, scenario);
  });

  it(submitRefused.name, async () => {
    await replayRefused(b);
  });
});
