import { Schema } from "effect";
import { stripUserInfo } from "../adapters/nats/security.ts";
import type { RetryPolicy } from "../effects/run-operation.ts";
import { InvalidArgument } from "../kernel/errors.ts";
import { number, section, TimerMs, withDefault } from "../kernel/validation.ts";
import { type BackoffPolicy, defaultBackoff } from "../machines/connection.machine.ts";

/** The one supervised NATS connection: how it dials, notices a dead link, backs off and drains. */
export interface ConnectionOptions {
  /**
   * Attempts the NATS client makes by itself after a drop before the runtime replaces it.
   * @defaultValue 10
   */
  readonly maxReconnectAttempts?: number;
  /**
   * Pause between two of the client's own reconnect attempts, in ms.
   * @defaultValue 1000
   */
  readonly reconnectTimeWaitMs?: number;
  /**
   * How often the client pings the server, in ms.
   * @defaultValue 30000
   */
  readonly pingIntervalMs?: number;
  /**
   * Unanswered pings before the connection counts as stale.
   * @defaultValue 2
   */
  readonly maxPingOut?: number;
  /**
   * Bound on one connect (TCP, TLS and authentication), in ms.
   * @defaultValue 5000
   */
  readonly connectTimeoutMs?: number;
  /**
   * Bound on draining the connection at `stop()`, in ms.
   * @defaultValue 5000
   */
  readonly drainTimeoutMs?: number;
  /**
   * Backoff between whole-client attempts (failed connect, client gave up, reset).
   * @defaultValue `{ initialMs: 250, maxMs: 10000, multiplier: 2, jitter: 0.5 }`
   */
  readonly backoff?: Partial<BackoffPolicy>;
  /**
   * Default deadline of one operation, waiting for the connection included, in ms.
   * @defaultValue 10000
   */
  readonly operationTimeoutMs?: number;
  /**
   * Retries of transient errors within an operation's deadline.
   * @defaultValue `{ attempts: 3, initialDelayMs: 500 }`
   */
  readonly retry?: Partial<RetryPolicy>;
  /**
   * How long a worker keeps retrying a results message that fails
   * transiently (no stream leader during an election, a server restarting),
   * in ms. Long enough for a leader election: a batch given up is released
   * and its tasks run again. Its tasks keep their leases meanwhile, and are
   * acked only once the results are stored.
   * @defaultValue 15000
   */
  readonly publishRetryMs?: number;
}

/** Longest whole-client backoff multiplier and retry count: beyond them a typo, not a policy. */
const maxMultiplier = 100;
const maxRetryAttempts = 100;

const Backoff = Schema.Struct({
  initialMs: withDefault(TimerMs, defaultBackoff.initialMs),
  maxMs: withDefault(TimerMs, defaultBackoff.maxMs),
  multiplier: withDefault(number(1, maxMultiplier), defaultBackoff.multiplier),
  jitter: withDefault(number(0, 1), defaultBackoff.jitter),
} satisfies Record<keyof BackoffPolicy, Schema.Top>).check(
  Schema.makeFilter(
    (b) => b.maxMs >= b.initialMs || { path: ["maxMs"], issue: "must be ≥ backoff.initialMs" },
  ),
);

const Retry = Schema.Struct({
  attempts: withDefault(number(1, maxRetryAttempts, { integer: true }), 3),
  initialDelayMs: withDefault(TimerMs, 500),
  // maxDelayMs is for retries within a deadline, not an option.
} satisfies Record<Exclude<keyof RetryPolicy, "maxDelayMs">, Schema.Top>);

/** `connection`: each field's default is the one its documentation states. */
export const ConnectionShape = Schema.Struct({
  maxReconnectAttempts: withDefault(number(0, 1_000_000, { integer: true }), 10),
  reconnectTimeWaitMs: withDefault(TimerMs, 1000),
  pingIntervalMs: withDefault(TimerMs, 30_000),
  maxPingOut: withDefault(number(1, 1000, { integer: true }), 2),
  connectTimeoutMs: withDefault(TimerMs, 5000),
  drainTimeoutMs: withDefault(TimerMs, 5000),
  backoff: section(Backoff),
  operationTimeoutMs: withDefault(TimerMs, 10_000),
  retry: section(Retry),
  publishRetryMs: withDefault(TimerMs, 15_000),
} satisfies Record<keyof ConnectionOptions, Schema.Top>);

export type ResolvedConnectionOptions = typeof ConnectionShape.Type;

const fail = (field: string, message: string): never => {
  throw new InvalidArgument({ message: `${field}: ${message}`, field });
};

const validSchemes = new Set(["nats:", "tls:", "ws:", "wss:"]);

/** Accepts `nats://host:port`, `tls://…`, `ws(s)://…` and bare `host:port`, like nats.js does. */
const parseServer = (server: unknown, field: string): string => {
  if (typeof server !== "string" || server.trim() === "") return fail(field, "must be a non-empty string");
  const withScheme = server.includes("://") ? server : `nats://${server}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    return fail(field, `cannot parse server URL "${server}"`);
  }
  if (!validSchemes.has(url.protocol))
    return fail(field, `unsupported scheme "${url.protocol}" in "${server}"`);
  if (url.hostname === "") return fail(field, `no host in "${server}"`);
  if (url.port !== "" && (Number(url.port) < 1 || Number(url.port) > 65535)) {
    return fail(field, `bad port in "${server}"`);
  }
  return server;
};

/**
 * `servers`, else `NATS_URL`, else the local server. Credentials come out of
 * the URLs before anything else looks at them: an error message or log line
 * must never carry a password.
 */
export const resolveServers = (given: unknown) => {
  const raw = given ?? process.env.NATS_URL ?? "nats://127.0.0.1:4222";
  const list: unknown[] =
    typeof raw === "string"
      ? raw.split(",").map((s) => s.trim())
      : Array.isArray(raw)
        ? [...raw]
        : fail("servers", "must be a URL string or an array of them");
  if (list.length === 0) fail("servers", "at least one server is needed");
  const credentials = list.map(stripUserInfo);
  const servers = credentials.map(({ server }, i) => parseServer(server, `servers[${i}]`));
  return { servers, credentials };
};
