import { assign, fromCallback, fromPromise, setup } from "xstate";

/**
 * The one supervised NATS connection of a runtime.
 *
 * The machine never touches a socket: `connect`, `watch`, `closeClient` and
 * `drainClient` are actors the runtime provides (see
 * src/adapters/nats/connection-actors.ts). The client itself stays in the
 * adapter; the context only holds its numeric id, so snapshots stay small and
 * serialisable for the inspector.
 */

export interface BackoffPolicy {
  /** First delay after a failed connect or a client that gave up. */
  readonly initialMs: number;
  /** Ceiling of the exponential growth. */
  readonly maxMs: number;
  readonly multiplier: number;
  /** 0..1: share of the delay that is randomised (full jitter at 1). */
  readonly jitter: number;
}

export const defaultBackoff: BackoffPolicy = { initialMs: 250, maxMs: 10_000, multiplier: 2, jitter: 0.5 };

export interface ConnectionContext {
  readonly backoff: BackoffPolicy;
  /** Id of the live client (adapter-side registry), null when there is none. */
  readonly clientId: number | null;
  /** Clients created so far: a reset or a give-up makes exactly one more. */
  readonly generation: number;
  /** Consecutive failed connects (or give-ups); drives the backoff. */
  readonly attempt: number;
  /** Delay chosen for the current backoff, kept for logs and the inspector. */
  readonly backoffMs: number;
  /** A reset asked for while the client was reconnecting: done once it is back. */
  readonly resetPending: boolean;
  readonly lastError: string | null;
}

export type ConnectionEvent =
  | { type: "connection.start" }
  | { type: "connection.reset"; reason: string }
  | { type: "connection.stop" }
  // translated from the client's status stream by the `watch` actor
  | { type: "connection.lost" }
  | { type: "connection.reconnecting"; attempt?: number }
  | { type: "connection.restored" }
  | { type: "connection.stale" }
  | { type: "connection.closed"; error?: string };

export interface ConnectionInput {
  readonly backoff?: BackoffPolicy;
}

/** Exponential, capped, with jitter; `random` in [0, 1). */
export const backoffDelay = (policy: BackoffPolicy, attempt: number, random: number): number => {
  const exp = Math.min(policy.maxMs, policy.initialMs * policy.multiplier ** Math.max(0, attempt - 1));
  const jittered = exp * (1 - policy.jitter) + exp * policy.jitter * random;
  return Math.max(1, Math.round(jittered));
};

const errorText = (error: unknown): string => (error instanceof Error ? error.message : String(error));

export const connectionMachine = setup({
  types: {
    context: {} as ConnectionContext,
    events: {} as ConnectionEvent,
    input: {} as ConnectionInput,
  },
  actors: {
    // Placeholders: the runtime provides the real ones with `.provide({ actors })`.
    connect: fromPromise<{ clientId: number }, { generation: number }>(async () => {
      throw new Error("connect actor not provided");
    }),
    watch: fromCallback<ConnectionEvent, { clientId: number }>(() => undefined),
    closeClient: fromPromise<void, { clientId: number | null }>(async () => undefined),
    drainClient: fromPromise<void, { clientId: number | null }>(async () => undefined),
  },
  delays: {
    backoff: ({ context }) => context.backoffMs,
  },
  guards: {
    resetPending: ({ context }) => context.resetPending,
  },
  actions: {
    chooseBackoff: assign({
      attempt: ({ context }) => context.attempt + 1,
      backoffMs: ({ context }) => backoffDelay(context.backoff, context.attempt + 1, Math.random()),
    }),
    forgetClient: assign({ clientId: null, resetPending: false }),
    deferReset: assign({ resetPending: true }),
  },
}).createMachine({
  id: "connection",
  context: ({ input }) => ({
    backoff: input.backoff ?? defaultBackoff,
    clientId: null,
    generation: 0,
    attempt: 0,
    backoffMs: 0,
    resetPending: false,
    lastError: null,
  }),
  initial: "idle",
  on: {
    "connection.stop": ".draining",
  },
  states: {
    idle: {
      on: { "connection.start": "connecting" },
    },
    connecting: {
      invoke: {
        src: "connect",
        // The generation the new client will have. It is counted on success
        // only: failed dials while the server is down create no client.
        input: ({ context }) => ({ generation: context.generation + 1 }),
        onDone: {
          target: "online",
          actions: assign({
            generation: ({ context }) => context.generation + 1,
            clientId: ({ event }) => event.output.clientId,
            attempt: 0,
            lastError: null,
            resetPending: false,
          }),
        },
        onError: {
          target: "backoff",
          actions: assign({ lastError: ({ event }) => errorText(event.error) }),
        },
      },
      // A client is being made right now: a reset would only make a second one.
      on: { "connection.reset": {} },
    },
    online: {
      invoke: {
        src: "watch",
        input: ({ context }) => ({ clientId: context.clientId ?? -1 }),
      },
      initial: "connected",
      on: {
        // The client used up its own reconnect budget and closed itself.
        "connection.closed": {
          target: "backoff",
          actions: ["forgetClient", assign({ lastError: ({ event }) => event.error ?? "client closed" })],
        },
      },
      states: {
        connected: {
          always: { guard: "resetPending", target: "#connection.resetting" },
          on: {
            "connection.lost": "reconnecting",
            "connection.reconnecting": "reconnecting",
            "connection.reset": {
              target: "#connection.resetting",
              actions: assign({ lastError: ({ event }) => `reset: ${event.reason}` }),
            },
            // nats.js answers a stale connection by dropping the socket and
            // redialling by itself; replacing the client here would be the
            // "discard a reconnecting client" bug. Its budget still bounds it.
            "connection.stale": "reconnecting",
          },
        },
        reconnecting: {
          on: {
            "connection.restored": "connected",
            // Never replace a client that is still reconnecting: remember it.
            "connection.reset": { actions: "deferReset" },
          },
        },
      },
    },
    resetting: {
      invoke: {
        src: "closeClient",
        input: ({ context }) => ({ clientId: context.clientId }),
        onDone: { target: "backoff", actions: "forgetClient" },
        onError: { target: "backoff", actions: "forgetClient" },
      },
      // Racing resets coalesce: the client being closed is replaced once.
      on: { "connection.reset": {} },
    },
    backoff: {
      entry: "chooseBackoff",
      after: { backoff: "connecting" },
      on: { "connection.reset": {} },
    },
    draining: {
      invoke: {
        src: "drainClient",
        input: ({ context }) => ({ clientId: context.clientId }),
        onDone: { target: "closed", actions: "forgetClient" },
        onError: { target: "closed", actions: "forgetClient" },
      },
      on: { "connection.stop": {}, "connection.reset": {} },
    },
    closed: {
      type: "final",
    },
  },
});

export type ConnectionMachine = typeof connectionMachine;

/** Flattened state name for logs and `rt.connection.state`. */
export type ConnectionState =
  | "idle"
  | "connecting"
  | "connected"
  | "reconnecting"
  | "resetting"
  | "backoff"
  | "draining"
  | "closed";

export const connectionStateName = (value: unknown): ConnectionState => {
  if (typeof value === "string") return value as ConnectionState;
  const online = (value as { online?: string }).online;
  return (online ?? "connected") as ConnectionState;
};
