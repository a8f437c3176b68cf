import { readFileSync } from "node:fs";
import type { NatsConnection, NodeConnectionOptions, Status } from "@nats-io/transport-node";
import { connect, credsAuthenticator, nkeyAuthenticator } from "@nats-io/transport-node";
import type { Logger } from "../../kernel/logger.ts";
import type { ConnectionEvent } from "../../machines/connection.machine.ts";
import { coalesceWrites } from "./coalesced-writes.ts";
import type { ConnectionSecurity } from "./security.ts";

export interface ClientSettings {
  readonly servers: readonly string[];
  readonly name: string;
  /** Reconnect attempts the client makes by itself before it gives up (then: backoff, new client). */
  readonly maxReconnectAttempts: number;
  readonly reconnectTimeWaitMs: number;
  readonly pingIntervalMs: number;
  readonly maxPingOut: number;
  readonly connectTimeoutMs: number;
  /** Bound on `drain()` at stop: after it the client is closed hard. */
  readonly drainTimeoutMs: number;
  /** Credentials and TLS, already validated. */
  readonly security: ConnectionSecurity;
}

/**
 * nats.js connect options for the resolved credentials and TLS. Seed and
 * creds files are read at every (re)connect, so a rotated file takes effect
 * without a restart.
 */
const securityOptions = (security: ConnectionSecurity): Partial<NodeConnectionOptions> => {
  const secrets = security.reveal();
  const auth: Partial<NodeConnectionOptions> =
    secrets.method === "user-password"
      ? { user: secrets.user, pass: secrets.pass }
      : secrets.method === "token"
        ? { token: secrets.token }
        : secrets.method === "nkey"
          ? { authenticator: nkeyAuthenticator(() => seedOf(secrets.nkeyFile)) }
          : secrets.method === "creds"
            ? { authenticator: credsAuthenticator(() => readFileSync(secrets.credsFile)) }
            : {};
  return security.tls === undefined ? auth : { ...auth, tls: { ...security.tls } };
};

const seedOf = (file: string): Uint8Array => new TextEncoder().encode(readFileSync(file, "utf8").trim());

interface Entry {
  readonly nc: NatsConnection;
  /** Opened right after connect so no status event is lost before `watch` starts. */
  readonly status: AsyncIterator<Status>;
}

/**
 * The registry of live NATS clients of one runtime. The connection machine
 * refers to a client by id; everything else asks this registry for the
 * current connection. In normal operation it holds exactly one client.
 */
export class NatsClients {
  readonly #settings: ClientSettings;
  readonly #log: Logger;
  readonly #entries = new Map<number, Entry>();
  #nextId = 1;

  constructor(settings: ClientSettings, log: Logger) {
    this.#settings = settings;
    this.#log = log;
  }

  get(id: number | null): NatsConnection | undefined {
    return id === null ? undefined : this.#entries.get(id)?.nc;
  }

  /** How many clients exist right now (tests and the bench assert it is ≤ 1). */
  get size(): number {
    return this.#entries.size;
  }

  async connect(signal: AbortSignal): Promise<number> {
    const s = this.#settings;
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers: [...s.servers],
        name: s.name,
        maxReconnectAttempts: s.maxReconnectAttempts,
        reconnectTimeWait: s.reconnectTimeWaitMs,
        pingInterval: s.pingIntervalMs,
        maxPingOut: s.maxPingOut,
        timeout: s.connectTimeoutMs,
        ...securityOptions(s.security),
        // Building a stack trace for every async op costs ~25 % of the client's CPU (measured).
        noAsyncTraces: true,
      });
    } catch (error) {
      throw new Error(connectFailure(s.servers, error), { cause: error });
    }
    if (signal.aborted) {
      // The runtime stopped while we dialled: do not leak the late client.
      // Closing a client nobody uses: its failure changes nothing.
      await nc.close().catch(() => undefined);
      throw new Error("connect aborted");
    }
    if (!coalesceWrites(nc)) this.#log.debug("nats.js internals not found: its writes are not coalesced");
    const id = this.#nextId++;
    this.#entries.set(id, { nc, status: nc.status()[Symbol.asyncIterator]() });
    return id;
  }

  /** Translates the client's status stream into connection machine events. */
  watch(id: number, send: (event: ConnectionEvent) => void): () => void {
    const entry = this.#entries.get(id);
    if (!entry) {
      send({ type: "connection.closed", error: "unknown client" });
      return () => undefined;
    }
    let stopped = false;
    const pump = async () => {
      for (;;) {
        const next = await entry.status.next();
        if (stopped) return;
        if (next.done) break;
        const event = toEvent(next.value);
        if (event) send(event);
      }
      // The status stream ends when the client closed (gave up or was closed).
      const closed = await entry.nc.closed();
      if (this.#entries.get(id) === entry) this.#entries.delete(id); // a client that gave up is gone
      if (!stopped) send({ type: "connection.closed", error: closed ? closed.message : "client closed" });
    };
    pump().catch((error) => this.#log.error({ err: error }, "status watcher failed"));
    return () => {
      stopped = true;
    };
  }

  /** Close at once (reset): pending publishes of a broken client are not worth waiting for. */
  async close(id: number | null): Promise<void> {
    const entry = id === null ? undefined : this.#entries.get(id);
    if (!entry || id === null) return;
    this.#entries.delete(id);
    // A broken client is dropped either way; the actor makes a new one.
    await entry.nc.close().catch(() => undefined);
  }

  /** Drain (flush and unsubscribe) with a bound, then close: stop() ends even when the server is down. */
  async drain(id: number | null): Promise<void> {
    const entry = id === null ? undefined : this.#entries.get(id);
    if (!entry || id === null) return;
    this.#entries.delete(id);
    const nc = entry.nc;
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#settings.drainTimeoutMs);
    });
    try {
      // A drain that fails falls through to close() below, which is what stop must reach.
      if (!nc.isClosed()) await Promise.race([nc.drain().catch(() => undefined), bound]);
    } finally {
      clearTimeout(timer);
      // Stopping: nothing is left to do with a client that fails to close.
      if (!nc.isClosed()) await nc.close().catch(() => undefined);
    }
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.#entries.keys()].map((id) => this.close(id)));
  }
}

const toEvent = (status: Status): ConnectionEvent | undefined => {
  switch (status.type) {
    case "disconnect":
      return { type: "connection.lost" };
    case "reconnecting":
      return { type: "connection.reconnecting" };
    case "reconnect":
      return { type: "connection.restored" };
    case "staleConnection":
      return { type: "connection.stale" };
    default:
      // update, ldm, ping, error, slowConsumer, forceReconnect: informational;
      // `close` is observed through closed() above.
      return undefined;
  }
};

/**
 * "connection refused" alone does not say where or why: name the servers and
 * the socket's own error (e.g. `connect ECONNREFUSED 127.0.0.1:4222`).
 */
const connectFailure = (servers: readonly string[], error: unknown): string => {
  const text = (e: unknown) => (e instanceof Error ? e.message : String(e));
  const cause = error instanceof Error && error.cause !== undefined ? ` (${text(error.cause)})` : "";
  return `cannot connect to ${servers.join(", ")}: ${text(error)}${cause}`;
};
