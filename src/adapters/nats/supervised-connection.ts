import type { NatsConnection } from "@nats-io/transport-node";
import { type Actor, createActor, type InspectionEvent, type Observer } from "xstate";
import type { ConnectionPort } from "../../effects/run-operation.ts";
import { RuntimeStopped } from "../../kernel/errors.ts";
import { childLogger, type Logger } from "../../kernel/logger.ts";
import {
  type BackoffPolicy,
  type ConnectionMachine,
  type ConnectionState,
  connectionMachine,
  connectionStateName,
} from "../../machines/connection.machine.ts";
import { connectionActors } from "./connection-actors.ts";
import { type ClientSettings, NatsClients } from "./nats-clients.ts";
import { JetStreamPresence } from "./no-jetstream.ts";
import type { ConnectionSecurity } from "./security.ts";

export interface ConnectionView {
  readonly state: ConnectionState;
  /** Clients created so far (1 after a clean start; +1 per reset or give-up). */
  readonly generation: number;
  readonly attempt: number;
  readonly lastError: string | null;
}

/** The public face of the connection actor: `rt.connection`. */
export interface ConnectionHandle {
  readonly state: ConnectionState;
  snapshot(): ConnectionView;
  /** Called on every state change; returns an unsubscribe function. */
  subscribe(listener: (view: ConnectionView) => void): () => void;
  /** Replace the client (deferred while it is reconnecting; racing resets give one new client). */
  reset(reason?: string): void;
}

/** `rt.connection`: the handle's calls only, not the connection's lifecycle (start, stop) nor its actor. */
export const connectionHandle = (connection: SupervisedConnection): ConnectionHandle => ({
  get state() {
    return connection.state;
  },
  snapshot: () => connection.snapshot(),
  subscribe: (listener) => connection.subscribe(listener),
  reset: (reason) => connection.reset(reason),
});

/** What the connection needs of the runtime's resolved options. */
export interface ConnectionSettings {
  readonly servers: readonly string[];
  readonly name: string;
  readonly security: ConnectionSecurity;
  readonly connection: Omit<ClientSettings, "servers" | "name" | "security"> & {
    readonly backoff: BackoffPolicy;
  };
}

type InspectObserver = Observer<InspectionEvent> | ((event: InspectionEvent) => void);

/**
 * Owns the connection actor and the client registry, and is the
 * `ConnectionPort` every operation waits on.
 */
export class SupervisedConnection implements ConnectionHandle, ConnectionPort<NatsConnection> {
  /** The XState actor, for tests (`partsOf(rt).core.connection.actor`). */
  readonly actor: Actor<ConnectionMachine>;
  readonly #clients: NatsClients;
  readonly #log: Logger;
  readonly #waiters = new Set<{ resolve: (nc: NatsConnection) => void; reject: (e: unknown) => void }>();
  /** Whether each client has JetStream: looked at as it connects, told by `explain`. */
  readonly #jetstream: JetStreamPresence;
  #stopped = false;
  #lastState: ConnectionState = "idle";

  constructor(options: ConnectionSettings, logger: Logger, inspect: InspectObserver | undefined) {
    this.#log = childLogger(logger, { actor: "connection" });
    this.#jetstream = new JetStreamPresence(this.#log);
    const c = options.connection;
    this.#clients = new NatsClients(
      {
        servers: options.servers,
        name: options.name,
        maxReconnectAttempts: c.maxReconnectAttempts,
        reconnectTimeWaitMs: c.reconnectTimeWaitMs,
        pingIntervalMs: c.pingIntervalMs,
        maxPingOut: c.maxPingOut,
        connectTimeoutMs: c.connectTimeoutMs,
        drainTimeoutMs: c.drainTimeoutMs,
        security: options.security,
      },
      this.#log,
    );
    const machine = connectionMachine.provide({ actors: connectionActors(this.#clients) });
    this.actor = createActor(machine, {
      id: "connection",
      input: { backoff: c.backoff },
      ...(inspect ? { inspect } : {}),
    });
    this.actor.subscribe(() => this.#onSnapshot());
  }

  #started = false;

  start(): void {
    this.#started = true;
    this.actor.start();
    this.actor.send({ type: "connection.start" });
  }

  get state(): ConnectionState {
    return connectionStateName(this.actor.getSnapshot().value);
  }

  snapshot(): ConnectionView {
    const { context, value } = this.actor.getSnapshot();
    return {
      state: connectionStateName(value),
      generation: context.generation,
      attempt: context.attempt,
      lastError: context.lastError,
    };
  }

  subscribe(listener: (view: ConnectionView) => void): () => void {
    let last: ConnectionState | undefined;
    const sub = this.actor.subscribe(() => {
      const view = this.snapshot();
      if (view.state === last) return;
      last = view.state;
      listener(view);
    });
    return () => sub.unsubscribe();
  }

  reset(reason = "requested"): void {
    this.actor.send({ type: "connection.reset", reason });
  }

  /** The current client if connected right now (hot paths check this without awaiting). */
  current(): NatsConnection | undefined {
    const snapshot = this.actor.getSnapshot();
    if (connectionStateName(snapshot.value) !== "connected") return undefined;
    return this.#clients.get(snapshot.context.clientId);
  }

  /** A JetStream call nobody answered on a client whose server has no JetStream: a permanent error saying so. */
  explain(nc: NatsConnection, error: unknown, operation: string): unknown {
    return this.#jetstream.explain(nc, error, operation);
  }

  whenConnected(signal: AbortSignal): Promise<NatsConnection> {
    if (this.#stopped) return Promise.reject(new RuntimeStopped({ message: "runtime stopped" }));
    const nc = this.current();
    if (nc) return Promise.resolve(nc);
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (client: NatsConnection) => {
          signal.removeEventListener("abort", onAbort);
          resolve(client);
        },
        reject: (error: unknown) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      const onAbort = () => {
        this.#waiters.delete(waiter);
        reject(signal.reason ?? new Error("aborted"));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiters.add(waiter);
    });
  }

  /** Drain and close; bounded even while the server is down. */
  async stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      for (const waiter of this.#waiters) waiter.reject(new RuntimeStopped({ message: "runtime stopped" }));
      this.#waiters.clear();
    }
    if (this.#started && this.actor.getSnapshot().status === "active") {
      await new Promise<void>((resolve) => {
        const sub = this.actor.subscribe({ complete: () => resolve() });
        if (this.actor.getSnapshot().status !== "active") resolve();
        this.actor.send({ type: "connection.stop" });
        void sub;
      });
    }
    this.actor.stop();
    await this.#clients.closeAll();
  }

  #onSnapshot(): void {
    const snapshot = this.actor.getSnapshot();
    const state = connectionStateName(snapshot.value);
    if (state !== this.#lastState) {
      const { generation, attempt, backoffMs, lastError } = snapshot.context;
      this.#log.info(
        {
          state,
          from: this.#lastState,
          generation,
          ...(state === "backoff" ? { attempt, backoffMs } : {}),
          ...(lastError && state !== "connected" ? { lastError } : {}),
        },
        `connection ${this.#lastState} → ${state}`,
      );
      this.#lastState = state;
      if (state === "connected") {
        const nc = this.#clients.get(snapshot.context.clientId);
        if (nc) this.#jetstream.check(nc);
      }
    }
    if (state === "connected" && this.#waiters.size > 0) {
      const nc = this.#clients.get(snapshot.context.clientId);
      if (!nc) return;
      const waiters = [...this.#waiters];
      this.#waiters.clear();
      for (const waiter of waiters) waiter.resolve(nc);
    }
  }
}
