import { hostname } from "node:os";
import type { InspectionEvent } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import {
  type AuthOptions,
  type ConnectionSecurity,
  resolveSecurity,
  stripUserInfo,
  type TlsOptions,
} from "../adapters/nats/security.ts";
import type { RetryPolicy } from "../effects/run-operation.ts";
import type { Clock } from "../kernel/clock.ts";
import { InvalidArgument } from "../kernel/errors.ts";
import type { Logger } from "../kernel/logger.ts";
import { checkOr, Label, maxTimerMs, number, Prefix, rejectUnknownKeys } from "../kernel/validation.ts";
import { type BackoffPolicy, defaultBackoff } from "../machines/connection.machine.ts";
import { allRoles, type Role, rolesOf } from "./permissions.ts";

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

/** Anything with an XState `inspect` observer, e.g. `createBrowserInspector()` or a test spy. */
export interface InspectorLike {
  readonly inspect: (event: InspectionEvent) => void;
}

/**
 * What `createRuntime` takes. Every field is optional.
 *
 * @example
 * ```ts
 * const rt = await createRuntime({ servers: "nats://nats:4222", auth: { credsFile: "/run/secrets/app.creds" } });
 * ```
 */
export interface RuntimeOptions {
  /**
   * NATS server URL(s): `nats://`, `tls://`, `ws(s)://` or `host:port`; a
   * comma-separated string or an array. Credentials in a URL
   * (`nats://user:pass@host`) are taken out and used as `auth`.
   * @defaultValue `NATS_URL`, else `nats://127.0.0.1:4222`
   */
  readonly servers?: string | readonly string[];
  /**
   * Connection name shown by the server (`/connz`).
   * @defaultValue `jetstate-<hostname>-<pid>`
   */
  readonly name?: string;
  /**
   * A pino logger; jetstate logs through child loggers of it.
   * @defaultValue a pino logger named `jetstate` at `JETSTATE_LOG_LEVEL`, `LOG_LEVEL` or `info`
   */
  readonly logger?: Logger;
  /**
   * `true`: a WebSocket inspector for the Stately inspector; or any object with an `inspect` observer.
   * @defaultValue false
   */
  readonly inspect?: boolean | InspectorLike;
  /**
   * First token of every subject, stream and bucket name jetstate creates.
   * @defaultValue `"jetstate"`
   */
  readonly prefix?: string;
  /**
   * Replicas of every stream and KV bucket jetstate creates (results, dead
   * letters, each queue's tasks and advisories streams, the jobs, leases,
   * answers and agents buckets), 1 to 5; consumers inherit their stream's.
   * Streams that exist already are never changed: one with another count
   * is reported once (a warning with the `nats stream edit` command).
   * @defaultValue `JETSTATE_REPLICAS`, else 1
   */
  readonly replicas?: number;
  /** The connection's timeouts, reconnects, backoff and retries (each field has its own default). */
  readonly connection?: ConnectionOptions;
  /** Leases, reaping, retention and cleanup of jobs (each field has its own default). */
  readonly jobs?: JobRuntimeOptions;
  /**
   * `nats`, `memory` (in-process, same semantics, nothing persisted), or a
   * broker object (e.g. `createMemoryBroker()` from `jetstate-jobs/testing`).
   * The memory default is refused under `NODE_ENV=production` unless given
   * explicitly.
   * @defaultValue `"nats"` when `servers` or `NATS_URL` is given, else `"memory"`
   */
  readonly broker?: "nats" | "memory" | Broker;
  /**
   * Time for job actors, leases and the memory broker; tests pass a `ManualClock`.
   * @defaultValue the real clock
   */
  readonly clock?: Clock;

  /**
   * What this runtime does: `submitter` (`rt.jobs`), `worker` (`rt.workers`),
   * `supervisor` (takes over orphaned jobs, dead-letters exhausted tasks),
   * `admin` (`rt.admin`, the reaper and cleanup). A runtime without a role
   * runs none of its background loops, and a call that needs it throws
   * `RoleNotHeld`: a worker-only process needs only a worker's NATS
   * permissions (`natsPermissions()`).
   * @defaultValue all four
   */
  readonly roles?: Role | readonly Role[];

  // ---- authentication and TLS (validated in security.ts) ----

  /**
   * Credentials: user and password, token, NKey seed file or `.creds` file.
   * @defaultValue credentials in the server URL, else `NATS_USER`/`NATS_PASSWORD`,
   * `NATS_TOKEN`, `NATS_NKEY`, `NATS_CREDS`; else none
   */
  readonly auth?: AuthOptions;
  /**
   * TLS: `true`, or CA and client certificate files (mutual TLS).
   * @defaultValue TLS when `NATS_CA`, `NATS_CERT` or `NATS_KEY` is set, else
   * only if the server requires it
   */
  readonly tls?: boolean | TlsOptions;
}

/** How the runtime supervises, reaps and cleans up jobs. */
export interface JobRuntimeOptions {
  /**
   * Supervision lease, in ms: a job whose supervising runtime died is taken over after it.
   * @defaultValue 10000
   */
  readonly leaseMs?: number;
  /**
   * Take over jobs whose supervisor died.
   * @defaultValue true
   */
  readonly takeOver?: boolean;
  /**
   * How often to look for submits that died before committing, in ms.
   * @defaultValue 15000
   */
  readonly reapIntervalMs?: number;
  /**
   * Margin after a submit's commit deadline before it is rolled back, in ms.
   * @defaultValue 10000
   */
  readonly reapGraceMs?: number;
  /**
   * How long finished jobs' records, results and dead letters are kept, in ms.
   * @defaultValue 604800000 (7 days)
   */
  readonly retentionMs?: number;
  /**
   * How often finished and abandoned jobs are cleaned up, in ms; 0: only on demand (`rt.admin.cleanup()`).
   * @defaultValue 600000 (10 min)
   */
  readonly cleanupIntervalMs?: number;
}

export interface ResolvedConnectionOptions {
  readonly maxReconnectAttempts: number;
  readonly reconnectTimeWaitMs: number;
  readonly pingIntervalMs: number;
  readonly maxPingOut: number;
  readonly connectTimeoutMs: number;
  readonly drainTimeoutMs: number;
  readonly backoff: BackoffPolicy;
  readonly operationTimeoutMs: number;
  readonly retry: RetryPolicy;
  readonly publishRetryMs: number;
}

export interface ResolvedOptions {
  readonly servers: readonly string[];
  readonly name: string;
  readonly prefix: string;
  /** Replicas of the streams and buckets jetstate creates. */
  readonly replicas: number;
  readonly connection: ResolvedConnectionOptions;
  readonly jobs: Required<JobRuntimeOptions>;
  readonly roles: ReadonlySet<Role>;
  /** Credentials and TLS; prints as `[redacted]`. */
  readonly security: ConnectionSecurity;
}

const runtimeKeys = [
  "servers",
  "name",
  "logger",
  "inspect",
  "prefix",
  "connection",
  "jobs",
  "broker",
  "clock",
  "auth",
  "tls",
  "roles",
  "replicas",
] as const;
const jobKeys = [
  "leaseMs",
  "takeOver",
  "reapIntervalMs",
  "reapGraceMs",
  "retentionMs",
  "cleanupIntervalMs",
] as const;
const connectionKeys = [
  "maxReconnectAttempts",
  "reconnectTimeWaitMs",
  "pingIntervalMs",
  "maxPingOut",
  "connectTimeoutMs",
  "drainTimeoutMs",
  "backoff",
  "operationTimeoutMs",
  "retry",
  "publishRetryMs",
] as const;
const backoffKeys = ["initialMs", "maxMs", "multiplier", "jitter"] as const;
const retryKeys = ["attempts", "initialDelayMs"] as const;

const fail = (field: string, message: string): never => {
  throw new InvalidArgument({ message: `${field}: ${message}`, field });
};

/** Longest whole-client backoff multiplier and retry count: beyond them a typo, not a policy. */
const maxMultiplier = 100;
const maxRetryAttempts = 100;

const Shapes = {
  timer: number(1, maxTimerMs),
  timerOrZero: number(0, maxTimerMs),
  retention: number(1, Number.MAX_SAFE_INTEGER),
  reconnectAttempts: number(0, 1_000_000, { integer: true }),
  maxPingOut: number(1, 1000, { integer: true }),
  multiplier: number(1, maxMultiplier),
  jitter: number(0, 1),
  retryAttempts: number(1, maxRetryAttempts, { integer: true }),
  // JetStream's own bound: a stream has at most 5 replicas.
  replicas: number(1, 5, { integer: true }),
} as const;

const objectOrFail = (value: unknown, field: string): Record<string, unknown> => {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    return fail(field, "must be an object");
  return value as Record<string, unknown>;
};

const validSchemes = new Set(["nats:", "tls:", "ws:", "wss:"]);

/** Accepts `nats://host:port`, `tls://…`, `ws(s)://…` and bare `host:port`, like nats.js does. */
export const parseServer = (server: unknown, field: string): string => {
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

/** Validates everything before anything connects; throws `InvalidArgument` naming the field. */
export const resolveOptions = (options: RuntimeOptions = {}): ResolvedOptions => {
  if (typeof options !== "object" || options === null) return fail("options", "must be an object");
  rejectUnknownKeys(options, runtimeKeys, "");
  const rawServers = options.servers ?? process.env.NATS_URL ?? "nats://127.0.0.1:4222";
  if (typeof rawServers !== "string" && !Array.isArray(rawServers)) {
    fail("servers", "must be a URL string or an array of them");
  }
  const list = typeof rawServers === "string" ? rawServers.split(",").map((s) => s.trim()) : [...rawServers];
  if (list.length === 0) fail("servers", "at least one server is needed");
  // Credentials come out of the URLs before anything else looks at them: an
  // error message or log line must never carry a password.
  const split = list.map(stripUserInfo);
  const servers = split.map(({ server }, i) => parseServer(server, `servers[${i}]`));
  const prefix = checkOr(Prefix, options.prefix, "prefix", "jetstate");
  // The name goes into the CONNECT line, which the server caps (4 KiB) by closing the connection.
  const name = checkOr(Label, options.name, "name", `jetstate-${hostname()}-${process.pid}`);
  // Checked here, not where it is first used: `logger: console` would otherwise
  // fail with a TypeError from deep inside the runtime.
  const logger = options.logger as unknown as Record<string, unknown> | undefined;
  if (
    logger !== undefined &&
    (typeof logger !== "object" ||
      logger === null ||
      !["child", "info", "warn", "error", "debug"].every((m) => typeof logger[m] === "function"))
  ) {
    fail("logger", "must be a pino logger (child, info, warn, error, debug)");
  }
  const clock = options.clock as unknown as Record<string, unknown> | undefined;
  if (
    clock !== undefined &&
    (typeof clock !== "object" ||
      clock === null ||
      !["now", "setTimeout", "clearTimeout"].every((m) => typeof clock[m] === "function"))
  ) {
    fail("clock", "must have now(), setTimeout() and clearTimeout()");
  }
  const broker = options.broker as unknown;
  if (
    broker !== undefined &&
    broker !== "nats" &&
    broker !== "memory" &&
    (typeof broker !== "object" || broker === null || typeof (broker as { kind?: unknown }).kind !== "string")
  ) {
    fail("broker", 'must be "nats", "memory" or a broker object');
  }
  if (
    options.inspect !== undefined &&
    typeof options.inspect !== "boolean" &&
    typeof (options.inspect as InspectorLike).inspect !== "function"
  ) {
    fail("inspect", "must be a boolean or an object with an inspect(event) function");
  }
  return {
    servers,
    name,
    prefix,
    replicas: resolveReplicas(options.replicas),
    connection: resolveConnection(objectOrFail(options.connection ?? {}, "connection")),
    jobs: resolveJobs(objectOrFail(options.jobs ?? {}, "jobs")),
    roles: new Set(options.roles === undefined ? allRoles : rolesOf(options.roles, "roles")),
    security: resolveSecurity(options.auth, options.tls, split),
  };
};

/** `replicas`, else `JETSTATE_REPLICAS` (named in the error when it is the one that is wrong), else 1. */
const resolveReplicas = (given: unknown): number => {
  if (given !== undefined) return checkOr(Shapes.replicas, given, "replicas", 1);
  const fromEnv = process.env.JETSTATE_REPLICAS;
  if (fromEnv === undefined || fromEnv.trim() === "") return 1;
  const replicas = Number(fromEnv);
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5)
    fail("replicas", `JETSTATE_REPLICAS=${JSON.stringify(fromEnv)} must be an integer from 1 to 5`);
  return replicas;
};

const resolveJobs = (j: JobRuntimeOptions): Required<JobRuntimeOptions> => {
  rejectUnknownKeys(j, jobKeys, "jobs");
  if (j.takeOver !== undefined && typeof j.takeOver !== "boolean") fail("jobs.takeOver", "must be a boolean");
  return {
    leaseMs: checkOr(Shapes.timer, j.leaseMs, "jobs.leaseMs", 10_000),
    takeOver: j.takeOver ?? true,
    reapIntervalMs: checkOr(Shapes.timer, j.reapIntervalMs, "jobs.reapIntervalMs", 15_000),
    reapGraceMs: checkOr(Shapes.timerOrZero, j.reapGraceMs, "jobs.reapGraceMs", 10_000),
    retentionMs: checkOr(Shapes.retention, j.retentionMs, "jobs.retentionMs", 7 * 24 * 3600_000),
    cleanupIntervalMs: checkOr(Shapes.timerOrZero, j.cleanupIntervalMs, "jobs.cleanupIntervalMs", 600_000),
  };
};

const resolveConnection = (c: ConnectionOptions): ResolvedConnectionOptions => {
  rejectUnknownKeys(c, connectionKeys, "connection");
  const b = objectOrFail(c.backoff ?? {}, "connection.backoff") as Partial<BackoffPolicy>;
  rejectUnknownKeys(b, backoffKeys, "connection.backoff");
  const r = objectOrFail(c.retry ?? {}, "connection.retry") as Partial<RetryPolicy>;
  rejectUnknownKeys(r, retryKeys, "connection.retry");
  const backoff: BackoffPolicy = {
    initialMs: checkOr(Shapes.timer, b.initialMs, "connection.backoff.initialMs", defaultBackoff.initialMs),
    maxMs: checkOr(Shapes.timer, b.maxMs, "connection.backoff.maxMs", defaultBackoff.maxMs),
    multiplier: checkOr(
      Shapes.multiplier,
      b.multiplier,
      "connection.backoff.multiplier",
      defaultBackoff.multiplier,
    ),
    jitter: checkOr(Shapes.jitter, b.jitter, "connection.backoff.jitter", defaultBackoff.jitter),
  };
  if (backoff.maxMs < backoff.initialMs) fail("connection.backoff.maxMs", "must be ≥ backoff.initialMs");
  return {
    maxReconnectAttempts: checkOr(
      Shapes.reconnectAttempts,
      c.maxReconnectAttempts,
      "connection.maxReconnectAttempts",
      10,
    ),
    reconnectTimeWaitMs: checkOr(Shapes.timer, c.reconnectTimeWaitMs, "connection.reconnectTimeWaitMs", 1000),
    pingIntervalMs: checkOr(Shapes.timer, c.pingIntervalMs, "connection.pingIntervalMs", 30_000),
    maxPingOut: checkOr(Shapes.maxPingOut, c.maxPingOut, "connection.maxPingOut", 2),
    connectTimeoutMs: checkOr(Shapes.timer, c.connectTimeoutMs, "connection.connectTimeoutMs", 5000),
    drainTimeoutMs: checkOr(Shapes.timer, c.drainTimeoutMs, "connection.drainTimeoutMs", 5000),
    backoff,
    operationTimeoutMs: checkOr(Shapes.timer, c.operationTimeoutMs, "connection.operationTimeoutMs", 10_000),
    retry: {
      attempts: checkOr(Shapes.retryAttempts, r.attempts, "connection.retry.attempts", 3),
      initialDelayMs: checkOr(Shapes.timer, r.initialDelayMs, "connection.retry.initialDelayMs", 500),
    },
    publishRetryMs: checkOr(Shapes.timer, c.publishRetryMs, "connection.publishRetryMs", 15_000),
  };
};
