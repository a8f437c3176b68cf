import { hostname } from "node:os";
import { Effect, Schema } from "effect";
import type { InspectionEvent } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import {
  type AuthOptions,
  type ConnectionSecurity,
  resolveSecurity,
  type TlsOptions,
} from "../adapters/nats/security.ts";
import type { Clock } from "../kernel/clock.ts";
import { decode } from "../kernel/decode.ts";
import { InvalidArgument } from "../kernel/errors.ts";
import type { Logger } from "../kernel/logger.ts";
import { Label, number, Prefix, section, withDefault } from "../kernel/validation.ts";
import {
  type ConnectionOptions,
  ConnectionShape,
  type ResolvedConnectionOptions,
  resolveServers,
} from "./connection-options.ts";
import { type JobRuntimeOptions, JobsShape } from "./job-options.ts";
import { allRoles, type Role, rolesOf } from "./permissions.ts";

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
   * answers, agents and presence buckets), 1 to 5; consumers inherit their stream's.
   * Streams that exist already are never changed: one with another count
   * is reported once (a warning with the `nats stream edit` command).
   * @defaultValue `JETSTATE_REPLICAS`, else 1
   */
  readonly replicas?: number;
  /**
   * How long a worker's announcement of itself stands (`rt.workers.list()`):
   * it is rewritten every third of this, and a worker whose process died
   * leaves the list once it has run out. 300 ms to 20 min.
   * @defaultValue 15000
   */
  readonly presenceMs?: number;
  /** The connection's timeouts, reconnects, backoff and retries (each field has its own default). */
  readonly connection?: ConnectionOptions;
  /** Leases, reaping, retention and cleanup of jobs (each field has its own default). */
  readonly jobs?: JobRuntimeOptions;
  /**
   * `nats`, `memory` (in-process, same semantics, nothing persisted), or a
   * broker object (e.g. `createMemoryBroker()` from `jetstate-jobs/testing`).
   * The memory default is refused under `NODE_ENV=production` unless given
   * explicitly. `"memory"` with `servers` is an `InvalidArgument` (`servers`):
   * it connects to no server.
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

export interface ResolvedOptions {
  readonly servers: readonly string[];
  readonly name: string;
  readonly prefix: string;
  /** Replicas of the streams and buckets jetstate creates. */
  readonly replicas: number;
  readonly presenceMs: number;
  readonly connection: ResolvedConnectionOptions;
  readonly jobs: typeof JobsShape.Type;
  readonly roles: ReadonlySet<Role>;
  /** Credentials and TLS; prints as `[redacted]`. */
  readonly security: ConnectionSecurity;
}

/** An object with these methods; checked here, or `logger: console` fails deep inside the runtime. */
const withMethods = (methods: readonly string[], message: string) =>
  Schema.Unknown.check(
    Schema.makeFilter(
      (value) =>
        typeof value === "object" &&
        value !== null &&
        methods.every((m) => typeof (value as Record<string, unknown>)[m] === "function"),
      { message },
    ),
  );

const BrokerChoice = Schema.Unknown.check(
  Schema.makeFilter(
    (broker) =>
      broker === "nats" ||
      broker === "memory" ||
      (typeof broker === "object" &&
        broker !== null &&
        typeof (broker as { kind?: unknown }).kind === "string"),
    { message: 'must be "nats", "memory" or a broker object' },
  ),
);

const Inspect = Schema.Unknown.check(
  Schema.makeFilter(
    (inspect) =>
      typeof inspect === "boolean" ||
      (typeof inspect === "object" &&
        inspect !== null &&
        typeof (inspect as { inspect?: unknown }).inspect === "function"),
    { message: "must be a boolean or an object with an inspect(event) function" },
  ),
);

/**
 * Every option: shapes and defaults. `servers`, `auth`, `tls` and `roles`
 * are resolved after it (credentials out of the URLs first, then the
 * `NATS_*` variables), `replicas` falls back to `JETSTATE_REPLICAS`.
 */
const RuntimeShape = Schema.Struct({
  servers: Schema.optional(Schema.Unknown),
  // The name goes into the CONNECT line, which the server caps (4 KiB) by closing the connection.
  name: Label.pipe(Schema.withDecodingDefault(Effect.sync(() => `jetstate-${hostname()}-${process.pid}`))),
  logger: Schema.optional(
    withMethods(
      ["child", "info", "warn", "error", "debug"],
      "must be a pino logger (child, info, warn, error, debug)",
    ),
  ),
  inspect: Schema.optional(Inspect),
  prefix: withDefault(Prefix, "jetstate"),
  // At least 300 ms: announced every third of it, a busy event loop must not make a worker flicker.
  // At most 20 min: the presence bucket keeps a key an hour (kv-presence.ts), three rewrites' worth.
  presenceMs: withDefault(number(300, 20 * 60_000, { integer: true }), 15_000),
  connection: section(ConnectionShape),
  jobs: section(JobsShape),
  broker: Schema.optional(BrokerChoice),
  clock: Schema.optional(
    withMethods(["now", "setTimeout", "clearTimeout"], "must have now(), setTimeout() and clearTimeout()"),
  ),
  auth: Schema.optional(Schema.Unknown),
  tls: Schema.optional(Schema.Unknown),
  roles: Schema.optional(Schema.Unknown),
  // JetStream's own bound: a stream has at most 5 replicas.
  replicas: Schema.optional(number(1, 5, { integer: true })),
} satisfies Record<keyof RuntimeOptions, Schema.Top>);

const fail = (field: string, message: string): never => {
  throw new InvalidArgument({ message: `${field}: ${message}`, field });
};

/** Validates everything before anything connects; throws `InvalidArgument` naming the field. */
export const resolveOptions = (options: RuntimeOptions = {}): ResolvedOptions => {
  const decoded = decode(RuntimeShape, options, "");
  if (!decoded.ok) return fail(decoded.field || "options", decoded.message);
  const o = decoded.value;
  const { servers, credentials } = resolveServers(o.servers);
  return {
    servers,
    name: o.name,
    prefix: o.prefix,
    replicas: o.replicas ?? replicasFromEnv(),
    presenceMs: o.presenceMs,
    connection: o.connection,
    jobs: o.jobs,
    roles: new Set(o.roles === undefined ? allRoles : rolesOf(o.roles, "roles")),
    security: resolveSecurity(options.auth, options.tls, credentials),
  };
};

/** `JETSTATE_REPLICAS` (named in the error when it is the one that is wrong), else 1. */
const replicasFromEnv = (): number => {
  const fromEnv = process.env.JETSTATE_REPLICAS;
  if (fromEnv === undefined || fromEnv.trim() === "") return 1;
  const replicas = Number(fromEnv);
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5)
    fail("replicas", `JETSTATE_REPLICAS=${JSON.stringify(fromEnv)} must be an integer from 1 to 5`);
  return replicas;
};
