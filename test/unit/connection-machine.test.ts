/**
 * The connection machine on a live actor with hand-settled actors and a
 * simulated clock, no socket: what each event leaves in context (client id,
 * generation, attempts, backoff delay, last error, pending reset), what the
 * invoked actors are given, and the delay before the next connect, worked out
 * by hand from the policy with Math.random pinned.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { createActor, fromCallback, fromPromise, SimulatedClock, waitFor } from "xstate";
import {
  type BackoffPolicy,
  type ConnectionEvent,
  connectionMachine,
  connectionStateName,
  defaultBackoff,
} from "../../src/machines/connection.machine.ts";

interface Deferred<T> {
  input: unknown;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

/** Every invoked actor records its input and waits for the test to settle it. */
const harness = (backoff?: BackoffPolicy) => {
  const calls = {
    connect: [] as Deferred<{ clientId: number }>[],
    closeClient: [] as Deferred<void>[],
    drainClient: [] as Deferred<void>[],
    watch: [] as unknown[],
  };
  const deferred =
    <T>(list: Deferred<T>[]) =>
    ({ input }: { input: unknown }) =>
      new Promise<T>((resolve, reject) => {
        list.push({ input, resolve, reject });
      });
  const clock = new SimulatedClock();
  const actor = createActor(
    connectionMachine.provide({
      actors: {
        connect: fromPromise<{ clientId: number }, { generation: number }>(deferred(calls.connect)),
        closeClient: fromPromise<void, { clientId: number | null }>(deferred(calls.closeClient)),
        drainClient: fromPromise<void, { clientId: number | null }>(deferred(calls.drainClient)),
        watch: fromCallback(({ input }) => {
          calls.watch.push(input);
        }),
      },
    }),
    { input: backoff ? { backoff } : {}, clock },
  );
  actor.start();
  // Lets a settled promise reach the actor (its callbacks run before the next macrotask): no time passes.
  const settle = () => new Promise((resolve) => setImmediate(resolve));
  return {
    actor,
    calls,
    clock,
    settle,
    send: (event: ConnectionEvent) => actor.send(event),
    ctx: () => actor.getSnapshot().context,
    state: () => connectionStateName(actor.getSnapshot().value),
  };
};

const policy: BackoffPolicy = { initialMs: 100, maxMs: 1000, multiplier: 2, jitter: 0.5 };

afterEach(() => {
  vi.restoreAllMocks();
});

/** Started and connected on client `clientId`. */
const online = async (clientId = 7) => {
  const h = harness(policy);
  h.send({ type: "connection.start" });
  h.calls.connect[0]!.resolve({ clientId });
  await h.settle();
  return h;
};

describe("connection machine", () => {
  it("starts idle with the default backoff, and connects on start", async () => {
    const h = harness();
    expect(h.state()).toBe("idle");
    expect(h.ctx()).toEqual({
      backoff: defaultBackoff,
      clientId: null,
      generation: 0,
      attempt: 0,
      backoffMs: 0,
      resetPending: false,
      lastError: null,
    });
    h.send({ type: "connection.start" });
    expect(h.state()).toBe("connecting");
    expect(h.calls.connect.map((c) => c.input)).toEqual([{ generation: 1 }]);
    h.calls.connect[0]!.resolve({ clientId: 42 });
    await h.settle();
    expect(h.state()).toBe("connected");
    expect(h.ctx()).toMatchObject({ clientId: 42, generation: 1, attempt: 0, lastError: null });
    expect(h.calls.watch).toEqual([{ clientId: 42 }]);
  });

  it("a failed connect backs off by the policy, then dials again for the same generation", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.5);
    const h = harness(policy);
    h.send({ type: "connection.start" });
    h.calls.connect[0]!.reject(new Error("ECONNREFUSED"));
    await h.settle();
    expect(h.state()).toBe("backoff");
    // Attempt 1: 100 ms, half of it jittered: 50 + 50 × 0.5 = 75.
    expect(h.ctx()).toMatchObject({ attempt: 1, backoffMs: 75, lastError: "ECONNREFUSED", generation: 0 });
    h.clock.increment(74);
    expect(h.state()).toBe("backoff");
    h.clock.increment(1);
    expect(h.state()).toBe("connecting");
    expect(h.calls.connect[1]!.input).toEqual({ generation: 1 });
    h.calls.connect[1]!.reject("refused again");
    await h.settle();
    // Attempt 2: 200 ms → 100 + 100 × 0.5 = 150.
    expect(h.ctx()).toMatchObject({ attempt: 2, backoffMs: 150, lastError: "refused again" });
    h.clock.increment(150);
    h.calls.connect[2]!.resolve({ clientId: 3 });
    await h.settle();
    expect(h.ctx()).toMatchObject({ attempt: 0, lastError: null, generation: 1, clientId: 3 });
  });

  it("follows the client through lost, reconnecting, stale and restored", async () => {
    const h = await online();
    h.send({ type: "connection.lost" });
    expect(h.state()).toBe("reconnecting");
    h.send({ type: "connection.restored" });
    expect(h.state()).toBe("connected");
    h.send({ type: "connection.reconnecting", attempt: 1 });
    expect(h.state()).toBe("reconnecting");
    h.send({ type: "connection.restored" });
    // A stale connection is the client's to redial, not a reason to replace it.
    h.send({ type: "connection.stale" });
    expect(h.state()).toBe("reconnecting");
    expect(h.calls.closeClient).toEqual([]);
    expect(h.ctx().clientId).toBe(7);
  });

  it("a reset closes the client, forgets it and makes a new one after the backoff", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const h = await online(7);
    h.send({ type: "connection.reset", reason: "stuck consumer" });
    expect(h.state()).toBe("resetting");
    expect(h.ctx().lastError).toBe("reset: stuck consumer");
    expect(h.calls.closeClient.map((c) => c.input)).toEqual([{ clientId: 7 }]);
    // Racing resets coalesce.
    h.send({ type: "connection.reset", reason: "again" });
    expect(h.calls.closeClient).toHaveLength(1);
    h.calls.closeClient[0]!.resolve();
    await h.settle();
    expect(h.state()).toBe("backoff");
    // Attempt 1 with random 0: 100 × 0.5 = 50.
    expect(h.ctx()).toMatchObject({ clientId: null, resetPending: false, attempt: 1, backoffMs: 50 });
    h.send({ type: "connection.reset", reason: "in backoff" });
    expect(h.state()).toBe("backoff");
    h.clock.increment(50);
    expect(h.calls.connect[1]!.input).toEqual({ generation: 2 });
    h.send({ type: "connection.reset", reason: "while connecting" });
    expect(h.state()).toBe("connecting");
    h.calls.connect[1]!.resolve({ clientId: 8 });
    await h.settle();
    expect(h.ctx()).toMatchObject({ clientId: 8, generation: 2 });
  });

  it("a client that fails to close is forgotten all the same", async () => {
    const h = await online(7);
    h.send({ type: "connection.reset", reason: "x" });
    h.calls.closeClient[0]!.reject(new Error("already closed"));
    await h.settle();
    expect(h.state()).toBe("backoff");
    expect(h.ctx().clientId).toBeNull();
  });

  it("a reset while reconnecting waits until the client is back, then happens", async () => {
    const h = await online(7);
    h.send({ type: "connection.lost" });
    h.send({ type: "connection.reset", reason: "later" });
    expect(h.state()).toBe("reconnecting");
    expect(h.ctx().resetPending).toBe(true);
    expect(h.calls.closeClient).toEqual([]);
    h.send({ type: "connection.restored" });
    expect(h.state()).toBe("resetting");
    expect(h.calls.closeClient.map((c) => c.input)).toEqual([{ clientId: 7 }]);
    h.calls.closeClient[0]!.resolve();
    await h.settle();
    expect(h.ctx().resetPending).toBe(false);
  });

  it("a client that gave up is forgotten, with its error or 'client closed'", async () => {
    const h = await online(7);
    h.send({ type: "connection.closed", error: "max reconnects" });
    expect(h.state()).toBe("backoff");
    expect(h.ctx()).toMatchObject({ clientId: null, lastError: "max reconnects", resetPending: false });

    const quiet = await online(9);
    quiet.send({ type: "connection.lost" });
    quiet.send({ type: "connection.reset", reason: "pending" });
    quiet.send({ type: "connection.closed" });
    expect(quiet.ctx()).toMatchObject({ clientId: null, lastError: "client closed", resetPending: false });
  });

  it("stop drains the client and ends closed, from any state, whether the drain works or not", async () => {
    for (const outcome of ["resolve", "reject"] as const) {
      const h = await online(7);
      h.send({ type: "connection.stop" });
      expect(h.state()).toBe("draining");
      expect(h.calls.drainClient.map((c) => c.input)).toEqual([{ clientId: 7 }]);
      h.send({ type: "connection.stop" });
      h.send({ type: "connection.reset", reason: "too late" });
      expect(h.calls.drainClient).toHaveLength(1);
      expect(h.state()).toBe("draining");
      if (outcome === "resolve") h.calls.drainClient[0]!.resolve();
      else h.calls.drainClient[0]!.reject(new Error("drain timeout"));
      await h.settle();
      expect(h.state()).toBe("closed");
      expect(h.actor.getSnapshot().status).toBe("done");
      expect(h.ctx().clientId).toBeNull();
    }
    const idle = harness(policy);
    idle.send({ type: "connection.stop" });
    expect(idle.calls.drainClient.map((c) => c.input)).toEqual([{ clientId: null }]);
  });
});

describe("connectionStateName", () => {
  it("flattens the online sub-state and passes top-level names through", () => {
    expect(connectionStateName("backoff")).toBe("backoff");
    expect(connectionStateName({ online: "reconnecting" })).toBe("reconnecting");
    expect(connectionStateName({ online: "connected" })).toBe("connected");
    expect(connectionStateName({})).toBe("connected");
  });
});

describe("connection machine: its own placeholder actors", () => {
  it("without a connect provided, the dial fails saying so", async () => {
    const actor = createActor(connectionMachine, { input: {}, clock: new SimulatedClock() });
    actor.start();
    actor.send({ type: "connection.start" });
    await waitFor(actor, (s) => s.matches("backoff"), { timeout: 1000 });
    expect(actor.getSnapshot().context.lastError).toBe("connect actor not provided");
    actor.stop();
  });
});
