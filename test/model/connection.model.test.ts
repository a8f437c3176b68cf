/**
 * Model-based tests of the connection actor (issue #3).
 *
 * Paths are generated from `connectionMachine` itself with @xstate/graph
 * (`createTestModel` refuses machines with `invoke`/`after`, so we generate
 * and replay ourselves), then replayed twice over:
 *
 * (a) every path against the machine provided with fake actors that this
 *     file controls (promises it settles, a status watcher it speaks through,
 *     a simulated clock for the backoff), checking after each step the state
 *     the graph predicts, an independent oracle for the counters, and the
 *     invariants the runtime relies on (one client at most, a watcher exactly
 *     while online, nothing left when closed);
 * (b) named scenarios against the real runtime and a real nats-server, whose
 *     expected state traces are walked through the same graph; together they
 *     must visit every state of the machine, and every transition they show
 *     must be an edge of the graph.
 */
import { getAdjacencyMap, getShortestPaths, getSimplePaths, type StatePath } from "@xstate/graph";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AnyEventObject,
  createActor,
  fromCallback,
  fromPromise,
  type InspectionEvent,
  SimulatedClock,
  type SnapshotFrom,
  type StateNode,
  waitFor,
} from "xstate";
import type { ConnectionOptions } from "../../src/api/connection-options.ts";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import {
  type BackoffPolicy,
  type ConnectionEvent,
  type ConnectionState,
  connectionMachine,
  connectionStateName,
} from "../../src/machines/connection.machine.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";
import { transitionRecorder, transitionsOf } from "./coverage.ts";

type ConnectionSnapshot = SnapshotFrom<typeof connectionMachine>;
type Path = StatePath<ConnectionSnapshot, AnyEventObject>;

// ---------------------------------------------------------------------------
// The graph

/** Every atomic state, named like `rt.connection.state` (online.connected → connected). */
const atomicStates = (node: StateNode<never, never> = connectionMachine.root as never): ConnectionState[] => {
  const children = Object.values(node.states) as StateNode<never, never>[];
  if (children.length === 0) return [node.key as ConnectionState];
  return children.flatMap((child) => atomicStates(child));
};
const allStates = atomicStates();

/** The one element of `list`; fails naming `what` when there is not exactly one. */
const theOne = <T>(list: readonly T[], what: string): T => {
  const [first] = list;
  if (list.length !== 1 || first === undefined) throw new Error(`expected one ${what}, found ${list.length}`);
  return first;
};

/** The done/error events of each invoked actor and the delayed events, read from the machine. */
const stateNodes = (
  node: StateNode<never, never> = connectionMachine.root as never,
): StateNode<never, never>[] => [
  node,
  ...(Object.values(node.states) as StateNode<never, never>[]).flatMap((child) => stateNodes(child)),
];
const invokeIdOf = (src: string): string => {
  const found = stateNodes()
    .flatMap((node) => node.invoke)
    .find((def) => def.src === src);
  if (!found) throw new Error(`no state invokes ${src}`);
  return found.id;
};
const invokeIds = {
  connect: invokeIdOf("connect"),
  watch: invokeIdOf("watch"),
  closeClient: invokeIdOf("closeClient"),
  drainClient: invokeIdOf("drainClient"),
};
const done = (src: keyof typeof invokeIds) => `xstate.done.actor.${invokeIds[src]}`;
const failed = (src: keyof typeof invokeIds) => `xstate.error.actor.${invokeIds[src]}`;
const backoffElapsed = (() => {
  const delayed = stateNodes().flatMap((node) => node.after.map((t) => t.eventType));
  if (delayed.length !== 1) throw new Error(`expected one delayed transition, found ${delayed.join(", ")}`);
  return theOne(delayed, "delayed transition");
})();

const E = {
  start: "connection.start",
  reset: "connection.reset",
  stop: "connection.stop",
  lost: "connection.lost",
  reconnecting: "connection.reconnecting",
  restored: "connection.restored",
  stale: "connection.stale",
  closed: "connection.closed",
  connected: done("connect"),
  connectFailed: failed("connect"),
  closeDone: done("closeClient"),
  closeFailed: failed("closeClient"),
  drainDone: done("drainClient"),
  drainFailed: failed("drainClient"),
  backoffElapsed,
} as const;

/** Client ids the fake connect hands out: 100 + the generation, so a stale id is visible. */
const clientIdFor = (generation: number) => 100 + generation;

/** Candidate events per state; @xstate/graph keeps those the state handles. */
const modelEvents = (snapshot: ConnectionSnapshot): AnyEventObject[] => [
  { type: E.start },
  { type: E.reset, reason: "model" },
  { type: E.stop },
  { type: E.lost },
  { type: E.reconnecting, attempt: 1 },
  { type: E.restored },
  { type: E.stale },
  { type: E.closed, error: "gave up" },
  { type: E.connected, output: { clientId: clientIdFor(snapshot.context.generation + 1) } },
  { type: E.connectFailed, error: new Error("ECONNREFUSED") },
  { type: E.closeDone, output: undefined },
  { type: E.closeFailed, error: new Error("close failed") },
  { type: E.drainDone, output: undefined },
  { type: E.drainFailed, error: new Error("drain failed") },
  { type: E.backoffElapsed },
];

const policy: BackoffPolicy = { initialMs: 100, maxMs: 1_000, multiplier: 2, jitter: 0.5 };
/**
 * States with more clients than this are not expanded: beyond it the graph
 * repeats itself. Simple paths (thousands) stop one generation earlier than
 * shortest paths to stay fast; they still reach generation 2 as a last step.
 */
const MAX_GENERATION = 2;
const MAX_GENERATION_SIMPLE = 1;

const traversal = {
  input: { backoff: policy },
  events: modelEvents,
  // What the assertions look at; `attempt`/`backoffMs` are left out so the
  // failed-connect loop (connecting ⇄ backoff) closes instead of growing forever.
  serializeState: (s: ConnectionSnapshot) =>
    JSON.stringify([s.value, s.context.generation, s.context.resetPending, s.context.clientId]),
  // A final snapshot ignores every event in a live actor (the pure transition
  // function would still take the root's `connection.stop`).
  stopWhen: (s: ConnectionSnapshot) => s.status === "done" || s.context.generation > MAX_GENERATION,
};
// The typed options only know the machine's own events, not the done/error/after ones.
const graphOptions = traversal as unknown as Parameters<typeof getShortestPaths<typeof connectionMachine>>[1];

const shortestPaths = getShortestPaths(connectionMachine, graphOptions) as unknown as Path[];
const simplePaths = getSimplePaths(connectionMachine, {
  ...graphOptions,
  stopWhen: (s: ConnectionSnapshot) => s.status === "done" || s.context.generation > MAX_GENERATION_SIMPLE,
}) as unknown as Path[];
const adjacency = getAdjacencyMap(connectionMachine, graphOptions as never) as Record<
  string,
  {
    state: ConnectionSnapshot;
    transitions: Record<string, { event: AnyEventObject; state: ConnectionSnapshot }>;
  }
>;

const flat = (s: ConnectionSnapshot): ConnectionState => connectionStateName(s.value);

/**
 * A path to a state followed by an event the state takes without changing
 * (`connection.reset` while connecting, `connection.stop` while draining …):
 * the graph's paths never take a self-loop, so these are added by hand, one
 * per state and ignored event, from the graph's own adjacency.
 */
const extendedPaths: Path[] = shortestPaths.flatMap((path) => {
  const here = adjacency[traversal.serializeState(path.state)];
  if (!here) return [];
  return Object.values(here.transitions)
    .filter(
      (t) =>
        traversal.serializeState(t.state) === traversal.serializeState(path.state) &&
        (t.event.type === E.reset || t.event.type === E.stop),
    )
    .map((t) => ({ ...path, state: t.state, steps: [...path.steps, { event: t.event, state: t.state }] }));
});

/** State-level edges of the graph (`from>to`, self-loops left out). */
const graphEdges = new Set(
  Object.values(adjacency).flatMap(({ state, transitions }) =>
    Object.values(transitions)
      .filter((t) => flat(t.state) !== flat(state))
      .map((t) => `${flat(state)}>${flat(t.state)}`),
  ),
);

/** Walks the graph from the initial state along `types`; fails if one is not a transition there. */
const walkGraph = (types: readonly string[]): ConnectionState[] => {
  const [first] = Object.values(adjacency);
  if (first === undefined) throw new Error("the graph has no states");
  const initial = first.state;
  let state = initial;
  const trace = [flat(state)];
  for (const type of types) {
    const key = traversal.serializeState(state);
    const next = Object.values(adjacency[key]?.transitions ?? {}).find((t) => t.event.type === type);
    if (!next) throw new Error(`the graph has no "${type}" transition from ${key}`);
    state = next.state;
    trace.push(flat(state));
  }
  return trace;
};

/**
 * Consecutive duplicates dropped, and any run of failed connects
 * (backoff → connecting → backoff …) counted once: how many happen against a
 * real server depends on timing, not on the machine.
 */
const normalize = (trace: readonly string[]): string =>
  trace
    .filter((s, i) => s !== trace[i - 1])
    .join(">")
    .replace(/(backoff>connecting>)+/g, "backoff>connecting>");

const describePath = (path: Path) =>
  path.steps
    .slice(1)
    .map((s) => s.event.type.replace(/^xstate\./, "").replace(/^connection\./, ""))
    .join(" → ") || "(initial)";

// ---------------------------------------------------------------------------
// (a) Fake actors the test drives

interface Pending<I, O> {
  readonly input: I;
  readonly signal: AbortSignal;
  settled: boolean;
  resolve(value: O): void;
  reject(error: unknown): void;
}

class FakeWorld {
  readonly connects: Pending<{ generation: number }, { clientId: number }>[] = [];
  readonly closes: Pending<{ clientId: number | null }, void>[] = [];
  readonly drains: Pending<{ clientId: number | null }, void>[] = [];
  readonly watchers = new Set<{ clientId: number; sendBack: (event: ConnectionEvent) => void }>();
  /** Clients that exist right now (made by connect, gone once closed, drained or given up). */
  readonly live = new Set<number>();
  readonly clock = new SimulatedClock();

  readonly actors = {
    connect: fromPromise<{ clientId: number }, { generation: number }>(({ input, signal }) =>
      this.#pending(this.connects, input, signal),
    ),
    watch: fromCallback<ConnectionEvent, { clientId: number }>(({ input, sendBack }) => {
      const watcher = { clientId: input.clientId, sendBack };
      this.watchers.add(watcher);
      return () => this.watchers.delete(watcher);
    }),
    // Like the adapter: the client leaves the registry as soon as closing starts.
    closeClient: fromPromise<void, { clientId: number | null }>(({ input, signal }) => {
      if (input.clientId !== null) this.live.delete(input.clientId);
      return this.#pending(this.closes, input, signal);
    }),
    drainClient: fromPromise<void, { clientId: number | null }>(({ input, signal }) => {
      if (input.clientId !== null) this.live.delete(input.clientId);
      return this.#pending(this.drains, input, signal);
    }),
  };

  #pending<I, O>(list: Pending<I, O>[], input: I, signal: AbortSignal): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      const entry: Pending<I, O> = {
        input,
        signal,
        settled: false,
        resolve: (value) => {
          entry.settled = true;
          resolve(value);
        },
        reject: (error) => {
          entry.settled = true;
          reject(error);
        },
      };
      list.push(entry);
    });
  }

  open<I, O>(list: Pending<I, O>[], what: string): Pending<I, O> {
    const open = list.filter((p) => !p.settled && !p.signal.aborted);
    expect(open, `exactly one ${what} in flight`).toHaveLength(1);
    return theOne(open, `${what} in flight`);
  }
}

/** Lets promise callbacks (fromPromise → machine) run: one macrotask flushes every microtask. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * What the connection must be, computed from the events alone (not from the
 * machine): its state name, the clients made (generation), the current
 * client, whether a reset waits for the reconnect, the backoff attempt.
 */
class Oracle {
  state: ConnectionState = "idle";
  generation = 0;
  resetPending = false;
  clientId: number | null = null;
  attempt = 0;

  /** The next state name: one rule per event, from the connection's documented behaviour. */
  #next(type: string, from: ConnectionState): ConnectionState {
    if (from === "closed") return from;
    const online = from === "connected" || from === "reconnecting";
    switch (type) {
      case E.start:
        return from === "idle" ? "connecting" : from;
      case E.stop:
        return "draining";
      case E.connected:
        return from === "connecting" ? "connected" : from;
      case E.connectFailed:
        return from === "connecting" ? "backoff" : from;
      case E.lost:
      case E.reconnecting:
      case E.stale:
        return from === "connected" ? "reconnecting" : from;
      case E.restored:
        // A reset deferred while reconnecting happens now.
        return from === "reconnecting" ? (this.resetPending ? "resetting" : "connected") : from;
      case E.reset:
        return from === "connected" ? "resetting" : from;
      case E.closed:
        return online ? "backoff" : from;
      case E.closeDone:
      case E.closeFailed:
        return from === "resetting" ? "backoff" : from;
      case E.backoffElapsed:
        return from === "backoff" ? "connecting" : from;
      case E.drainDone:
      case E.drainFailed:
        return from === "draining" ? "closed" : from;
      default:
        throw new Error(`the oracle does not know ${type}`);
    }
  }

  apply(event: AnyEventObject): void {
    const from = this.state;
    const to = this.#next(event.type, from);
    this.state = to;
    switch (event.type) {
      case E.connected:
        this.generation++;
        this.clientId = (event.output as { clientId: number }).clientId;
        this.attempt = 0;
        this.resetPending = false;
        break;
      case E.reset:
        // Only a reset while the client reconnects is remembered; elsewhere it acts or is moot.
        if (from === "reconnecting") this.resetPending = true;
        break;
      case E.closed:
      case E.closeDone:
      case E.closeFailed:
      case E.drainDone:
      case E.drainFailed:
        this.clientId = null;
        this.resetPending = false;
        break;
    }
    if (to === "backoff" && from !== "backoff") this.attempt++;
  }
}

const replay = async (path: Path, inspect: (e: InspectionEvent) => void = () => undefined): Promise<void> => {
  const world = new FakeWorld();
  const actor = createActor(connectionMachine.provide({ actors: world.actors }), {
    input: { backoff: policy },
    clock: world.clock,
    inspect,
  });
  const oracle = new Oracle();
  actor.start();
  try {
    for (const [index, step] of path.steps.entries()) {
      const before = actor.getSnapshot();
      if (index === 0) {
        expect(step.event.type).toBe("xstate.init");
      } else {
        await deliver(world, actor, step.event);
        oracle.apply(step.event);
      }
      const now = actor.getSnapshot();
      const where = `after step ${index} (${step.event.type})`;
      // What the events imply (the oracle, not the machine) …
      expect(flat(now), `${where}: state`).toBe(oracle.state);
      expect(now.context.generation, `${where}: generation = clients created`).toBe(oracle.generation);
      expect(now.context.resetPending, `${where}: resetPending`).toBe(oracle.resetPending);
      expect(now.context.clientId, `${where}: clientId`).toBe(oracle.clientId);
      expect(now.context.attempt, `${where}: attempt`).toBe(oracle.attempt);
      // … and the invariants hold.
      checkInvariants(world, now, where);
      if (
        index > 0 &&
        flat(before) === "connecting" &&
        flat(now) !== "connecting" &&
        step.event.type === E.stop
      ) {
        expect(world.connects.at(-1)!.signal.aborted, `${where}: a dial cut short by stop is aborted`).toBe(
          true,
        );
      }
    }
  } finally {
    actor.stop();
  }
};

const checkInvariants = (world: FakeWorld, now: ConnectionSnapshot, where: string) => {
  const state = flat(now);
  expect(world.live.size, `${where}: never two clients`).toBeLessThanOrEqual(1);
  const online = state === "connected" || state === "reconnecting";
  expect(world.watchers.size, `${where}: a status watcher exactly while online`).toBe(online ? 1 : 0);
  if (online) {
    expect(
      theOne([...world.watchers], "watcher").clientId,
      `${where}: the watcher watches the current client`,
    ).toBe(now.context.clientId);
    expect(world.live.has(now.context.clientId!), `${where}: the current client is alive`).toBe(true);
  }
  if (state === "connected") expect(now.context.resetPending, `${where}: no reset left pending`).toBe(false);
  if (state === "connecting") {
    const dial = world.open(world.connects, "connect");
    expect(dial.input.generation, `${where}: the dial is for the next generation`).toBe(
      now.context.generation + 1,
    );
  }
  if (state === "resetting") {
    expect(world.open(world.closes, "close").input.clientId).toBe(now.context.clientId);
  }
  if (state === "draining") {
    expect(world.open(world.drains, "drain").input.clientId).toBe(now.context.clientId);
  }
  if (state === "backoff") {
    const exp = Math.min(policy.maxMs, policy.initialMs * policy.multiplier ** (now.context.attempt - 1));
    expect(now.context.backoffMs).toBeGreaterThanOrEqual(Math.floor(exp * (1 - policy.jitter)));
    expect(now.context.backoffMs).toBeLessThanOrEqual(exp);
  }
  if (state === "closed") {
    expect(now.status, `${where}: closed is final`).toBe("done");
    expect(world.live.size, `${where}: closed leaves no client`).toBe(0);
  }
};

/** Makes `event` happen the way it does in production: through the actor that would cause it. */
const deliver = async (
  world: FakeWorld,
  actor: ReturnType<typeof createActor<typeof connectionMachine>>,
  event: AnyEventObject,
): Promise<void> => {
  const snapshot = actor.getSnapshot();
  switch (event.type) {
    case E.start:
    case E.reset:
    case E.stop:
      actor.send(event as ConnectionEvent);
      break;
    case E.lost:
    case E.reconnecting:
    case E.restored:
    case E.stale:
    case E.closed: {
      // Status events only ever come from the watcher of the live client.
      const watchers = [...world.watchers];
      expect(watchers, `a watcher to send ${event.type}`).toHaveLength(1);
      const watcher = theOne(watchers, "watcher");
      if (event.type === E.closed) world.live.delete(watcher.clientId);
      watcher.sendBack(event as ConnectionEvent);
      break;
    }
    case E.connected: {
      const output = event.output as { clientId: number };
      expect(world.live.size, "a new client only once the old one is gone").toBe(0);
      world.live.add(output.clientId);
      world.open(world.connects, "connect").resolve(output);
      break;
    }
    case E.connectFailed:
      world.open(world.connects, "connect").reject(event.error);
      break;
    case E.closeDone:
      world.open(world.closes, "close").resolve();
      break;
    case E.closeFailed:
      world.open(world.closes, "close").reject(event.error);
      break;
    case E.drainDone:
      world.open(world.drains, "drain").resolve();
      break;
    case E.drainFailed:
      world.open(world.drains, "drain").reject(event.error);
      break;
    case E.backoffElapsed: {
      // The delay is the one in context: 1 ms short of it nothing happens.
      const { backoffMs } = snapshot.context;
      world.clock.increment(backoffMs - 1);
      expect(flat(actor.getSnapshot()), `still waiting ${backoffMs - 1} of ${backoffMs} ms`).toBe("backoff");
      world.clock.increment(1);
      break;
    }
    default:
      throw new Error(`the model produced an event this replay does not know: ${event.type}`);
  }
  await settle();
};

describe("connection machine: generated paths against fake actors", () => {
  it("the graph reaches every state of the machine", () => {
    const reached = new Set(shortestPaths.map((p) => flat(p.state)));
    expect([...reached].sort()).toEqual([...new Set(allStates)].sort());
    expect([...allStates].sort()).toEqual(
      [
        "backoff",
        "closed",
        "connected",
        "connecting",
        "draining",
        "idle",
        "reconnecting",
        "resetting",
      ].sort(),
    );
  });

  it.each(shortestPaths.map((p) => [describePath(p), p] as const))("shortest path: %s", async (_, path) => {
    await replay(path);
  });

  it(`all ${simplePaths.length} simple paths (expanded up to generation ${MAX_GENERATION_SIMPLE})`, async () => {
    expect(simplePaths.length).toBeGreaterThan(shortestPaths.length);
    for (const path of simplePaths) {
      try {
        await replay(path);
      } catch (error) {
        throw new Error(`path ${describePath(path)}: ${(error as Error).message}`, { cause: error });
      }
    }
  });

  it.each(extendedPaths.map((p) => [describePath(p), p] as const))(
    "a state's ignored event: %s",
    async (_, path) => {
      await replay(path);
    },
  );

  it("the replayed paths take every transition of the machine (the ignored resets and stops too)", async () => {
    const recorder = transitionRecorder(connectionMachine);
    for (const path of [...shortestPaths, ...simplePaths, ...extendedPaths])
      await replay(path, recorder.inspect);
    expect(transitionsOf(connectionMachine)).toHaveLength(22);
    expect(recorder.missing()).toEqual([]);
  });
});

// ---------------------------------------------------------------------------
// (b) Named scenarios against the real runtime and a real nats-server

interface TraceEntry {
  readonly state: ConnectionState;
  readonly generation: number;
  readonly at: number;
}

/** Each scenario: the events it should drive through the graph, and how to make them happen. */
const scenarios = {
  "kill → reconnecting → restart → connected, same client": [
    E.start,
    E.connected,
    E.lost,
    E.reconnecting,
    E.restored,
  ],
  "killed beyond the reconnect budget → backoff → connecting → connected, one new client": [
    E.start,
    E.connected,
    E.lost,
    E.reconnecting,
    E.closed,
    E.backoffElapsed,
    E.connectFailed,
    E.backoffElapsed,
    E.connected,
  ],
  "reset while reconnecting is deferred until the server is back, then one new client": [
    E.start,
    E.connected,
    E.lost,
    E.reset,
    E.restored,
    E.closeDone,
    E.backoffElapsed,
    E.connected,
  ],
  "racing resets while connected → exactly one new client": [
    E.start,
    E.connected,
    E.reset,
    E.reset,
    E.closeDone,
    E.reset,
    E.backoffElapsed,
    E.connected,
  ],
  "stop while the server is down ends in bounded time, closed": [
    E.start,
    E.connected,
    E.lost,
    E.stop,
    E.drainDone,
  ],
} as const satisfies Record<string, readonly string[]>;
type ScenarioName = keyof typeof scenarios;

/**
 * Edges of the graph no real-server scenario takes, and why; the fake-actor
 * paths above take every one of them.
 */
const notOnARealServer: Record<string, string> = {
  "idle>draining": "a runtime starts its connection at once: nothing can stop it while idle",
  "connecting>draining": "a stop during a dial is a race with the dial; timing, not a plan",
  "resetting>draining": "a stop while the old client closes: the same race",
  "backoff>draining": "a stop inside a backoff window: the same race",
  "connected>backoff":
    "nats.js reports a disconnect before it gives up, so its close comes while reconnecting",
  "connected>draining": "every scenario ends with rt.stop() from connected, after its trace was checked",
};

const expectedTrace = (name: ScenarioName) => normalize(walkGraph(scenarios[name]));

describe("connection actor: scenarios on a real nats-server", () => {
  let server: NatsServerHandle;
  /** Whether a scenario left the server killed (a failed one must not take the next ones down). */
  let down = false;
  const kill = async () => {
    down = true;
    await server.kill();
  };
  const restart = async () => {
    await server.restart();
    down = false;
  };
  const traces = new Map<ScenarioName, TraceEntry[]>();
  const reconnectMs: number[] = [];

  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server?.dispose();
    if (reconnectMs.length > 0) {
      console.info(
        `[connection.model] reconnect after restart: ${reconnectMs.map((ms) => `${ms} ms`).join(", ")}`,
      );
    }
  });

  /** A runtime on the test server whose connection actor's states are recorded from `idle` on. */
  const open = async (name: ScenarioName, connection: ConnectionOptions) => {
    const trace: TraceEntry[] = [];
    traces.set(name, trace);
    const rt = await createRuntime({
      servers: server.url,
      name: `model-${traces.size}`,
      logger: silentLogger(),
      inspect: {
        inspect: (event: unknown) => {
          const e = event as InspectionEvent;
          if (e.type !== "@xstate.snapshot" || e.actorRef.sessionId !== e.rootId) return;
          const s = e.snapshot as ConnectionSnapshot;
          trace.push({ state: flat(s), generation: s.context.generation, at: Date.now() });
        },
      },
      connection: { drainTimeoutMs: 1_000, ...connection },
    });
    return { rt, trace };
  };

  const reach = (
    rt: Runtime,
    state: ConnectionState,
    also: (s: ConnectionSnapshot) => boolean = () => true,
  ) => waitFor(partsOf(rt).core.connection.actor, (s) => flat(s) === state && also(s), { timeout: 15_000 });

  /** The server back up, the runtime stopped, and the server sees no client left. */
  const finish = async (rt: Runtime) => {
    if (down) await restart();
    await rt.stop();
    await waitUntil(async () => (await server.connectionCount()) === 0, {
      timeoutMs: 5_000,
      message: "the server to see no connection after stop()",
    });
  };

  const checkTrace = (name: ScenarioName, trace: readonly TraceEntry[]) => {
    const states = trace.map((t) => t.state);
    for (const [i, state] of states.entries()) {
      const from = states[i - 1];
      if (from === undefined || from === state) continue;
      expect(graphEdges.has(`${from}>${state}`), `${from} → ${state} is an edge of the graph`).toBe(true);
    }
    expect(normalize(states), name).toBe(expectedTrace(name));
  };

  /** How each planned scenario is made to happen on the real server. */
  const play: Record<ScenarioName, (name: ScenarioName) => Promise<void>> = {
    "kill → reconnecting → restart → connected, same client": async (name) => {
      const { rt, trace } = await open(name, { maxReconnectAttempts: 600, reconnectTimeWaitMs: 100 });
      try {
        await reach(rt, "connected");
        const { generation } = rt.connection.snapshot();
        expect(generation).toBe(1);
        await kill();
        await reach(rt, "reconnecting");
        await restart();
        const back = Date.now();
        await reach(rt, "connected");
        reconnectMs.push(Date.now() - back);
        expect(rt.connection.snapshot().generation, "the client was not replaced").toBe(generation);
        expect(await server.connectionCount()).toBe(1);
        checkTrace(name, trace);
      } finally {
        await finish(rt);
      }
    },

    "killed beyond the reconnect budget → backoff → connecting → connected, one new client": async (name) => {
      const { rt, trace } = await open(name, {
        maxReconnectAttempts: 2,
        reconnectTimeWaitMs: 100,
        backoff: { initialMs: 50, maxMs: 200 },
      });
      try {
        await reach(rt, "connected");
        const { generation } = rt.connection.snapshot();
        await kill();
        // attempt ≥ 2: the client gave up, then at least one dial failed while the server was down.
        await reach(rt, "backoff", (s) => s.context.attempt >= 2);
        expect(rt.connection.snapshot().generation, "failed dials create no client").toBe(generation);
        await restart();
        await reach(rt, "connected");
        expect(rt.connection.snapshot().generation, "exactly one new client").toBe(generation + 1);
        await waitUntil(async () => (await server.connectionCount()) === 1, {
          timeoutMs: 5_000,
          message: "the server to see one connection",
        });
        checkTrace(name, trace);
      } finally {
        await finish(rt);
      }
    },

    "reset while reconnecting is deferred until the server is back, then one new client": async (name) => {
      const { rt, trace } = await open(name, { maxReconnectAttempts: 600, reconnectTimeWaitMs: 100 });
      try {
        await reach(rt, "connected");
        const { generation } = rt.connection.snapshot();
        await kill();
        await reach(rt, "reconnecting");
        const resetAt = trace.length;
        rt.connection.reset("deferred");
        rt.connection.reset("deferred again");
        expect(rt.connection.snapshot()).toMatchObject({ state: "reconnecting", generation });
        expect(partsOf(rt).core.connection.actor.getSnapshot().context.resetPending).toBe(true);
        const downUntil = Date.now();
        await restart();
        await reach(rt, "connected", (s) => s.context.generation > generation);
        expect(rt.connection.snapshot().generation, "exactly one new client").toBe(generation + 1);
        expect(partsOf(rt).core.connection.actor.getSnapshot().context.resetPending).toBe(false);
        const whileDown = trace.slice(resetAt).filter((t) => t.at < downUntil);
        expect(
          whileDown.filter((t) => t.state === "resetting" || t.generation !== generation),
          "nothing replaced while the server was down",
        ).toEqual([]);
        expect(
          trace.filter((t, i) => t.state === "resetting" && trace[i - 1]?.state !== "resetting"),
        ).toHaveLength(1);
        await waitUntil(async () => (await server.connectionCount()) === 1, {
          timeoutMs: 5_000,
          message: "the server to see one connection",
        });
        checkTrace(name, trace);
      } finally {
        await finish(rt);
      }
    },

    "racing resets while connected → exactly one new client": async (name) => {
      const { rt, trace } = await open(name, { backoff: { initialMs: 20, maxMs: 100 } });
      let resetInBackoff = false;
      const sub = rt.connection.subscribe((view) => {
        // A third reset lands in backoff, between the old client and the new one.
        if (view.state === "backoff" && !resetInBackoff) {
          resetInBackoff = true;
          rt.connection.reset("third");
        }
      });
      try {
        await reach(rt, "connected");
        const { generation } = rt.connection.snapshot();
        expect(await server.connectionCount()).toBe(1);
        rt.connection.reset("first");
        rt.connection.reset("second");
        expect(rt.connection.state).toBe("resetting");
        await reach(rt, "connected", (s) => s.context.generation > generation);
        expect(resetInBackoff).toBe(true);
        expect(rt.connection.snapshot().generation, "one new client").toBe(generation + 1);
        await waitUntil(async () => (await server.connectionCount()) === 1, {
          timeoutMs: 5_000,
          message: "the server to see one connection",
        });
        expect(rt.connection.snapshot()).toMatchObject({ state: "connected", generation: generation + 1 });
        checkTrace(name, trace);
      } finally {
        sub();
        await finish(rt);
      }
    },

    "stop while the server is down ends in bounded time, closed": async (name) => {
      const drainTimeoutMs = 1_000;
      const { rt, trace } = await open(name, {
        maxReconnectAttempts: 600,
        reconnectTimeWaitMs: 100,
        drainTimeoutMs,
      });
      try {
        await reach(rt, "connected");
        await kill();
        await reach(rt, "reconnecting");
        const started = performance.now();
        await rt.stop();
        const took = performance.now() - started;
        expect(took).toBeLessThan(drainTimeoutMs + 2_000);
        // Prompt, and still after every loop ended: the client was closed under them, not left.
        expect(partsOf(rt).core.loops.running()).toEqual([]);
        expect(rt.connection.state).toBe("closed");
        expect(partsOf(rt).core.connection.actor.getSnapshot().status).toBe("done");
        checkTrace(name, trace);
      } finally {
        await finish(rt);
      }
    },
  };

  for (const name of Object.keys(scenarios) as ScenarioName[]) {
    it(name, () => play[name](name));
  }

  // Each scenario's test asserts that the real trace is its planned walk through the graph
  // (checkTrace), so what the plans cover is what real servers cover; this needs no other test
  // to have run first.
  it("together the scenarios' plans visit every state and every edge but the listed ones", () => {
    const walks = (Object.keys(scenarios) as ScenarioName[]).map((name) => walkGraph(scenarios[name]));
    const visited = new Set(walks.flat());
    expect(
      allStates.filter((s) => !visited.has(s)),
      "states no real-server scenario reaches",
    ).toEqual([]);
    const edges = new Set(
      walks.flatMap((walk) =>
        walk.flatMap((to, i) => (i > 0 && walk[i - 1] !== to ? [`${walk[i - 1]}>${to}`] : [])),
      ),
    );
    const uncovered = [...graphEdges].filter((e) => !edges.has(e)).sort();
    expect(uncovered).toEqual(Object.keys(notOnARealServer).sort());
  });
});
