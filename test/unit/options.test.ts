/**
 * Bad options are refused by createRuntime before anything connects: the
 * error is an `InvalidArgument` naming the field, and a listener standing in
 * for the NATS server sees no connection attempt.
 */
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BearerTokens } from "../../src/adapters/http/bearer-tokens.ts";
import { type RuntimeOptions, resolveOptions } from "../../src/api/options.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { InvalidArgument } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { waitUntil } from "../harness/wait.ts";

/** A TCP listener that counts connections (and drops them), told apart from its own probes. */
class ConnectionCounter {
  readonly #server = net.createServer((socket) => {
    this.#accepted.push(socket.remotePort ?? -1);
    socket.destroy();
  });
  readonly #accepted: number[] = [];
  readonly #probes = new Set<number>();
  port = 0;

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    this.port = (this.#server.address() as net.AddressInfo).port;
  }

  /** Connections that were not probes. */
  get count(): number {
    return this.#accepted.filter((port) => !this.#probes.has(port)).length;
  }

  /**
   * Connects once and waits until the listener has accepted that connection:
   * connections are accepted in order, so any dial started before this one
   * has been counted by the time it returns.
   */
  async settled(): Promise<number> {
    const probe = net.connect({ host: "127.0.0.1", port: this.port });
    probe.on("error", () => undefined);
    await new Promise<void>((resolve) => probe.once("connect", () => resolve()));
    const port = probe.localPort!;
    this.#probes.add(port);
    await waitUntil(() => this.#accepted.includes(port), {
      timeoutMs: 5_000,
      intervalMs: 1,
      message: "the counter to accept its probe",
    });
    probe.destroy();
    return this.count;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

const logger = silentLogger();

describe("createRuntime refuses bad options before connecting", () => {
  const counter = new ConnectionCounter();
  let url = "";

  beforeAll(async () => {
    await counter.listen();
    url = `nats://127.0.0.1:${counter.port}`;
  });
  afterAll(async () => {
    await counter.close();
  });

  /** [what, options, the field the error must name]; `servers` defaults to the counter. */
  const cases: Array<[string, () => Record<string, unknown>, string]> = [
    ['servers "nats://" (no host)', () => ({ servers: "nats://" }), "servers[0]"],
    ['servers "http://x:4222" (not a NATS scheme)', () => ({ servers: "http://x:4222" }), "servers[0]"],
    ['servers "::::"', () => ({ servers: "::::" }), "servers[0]"],
    ['servers ""', () => ({ servers: "" }), "servers[0]"],
    ["servers [] (none)", () => ({ servers: [] }), "servers"],
    ["servers 4222 (not a string)", () => ({ servers: 4222 }), "servers"],
    ["port 70000", () => ({ servers: "nats://127.0.0.1:70000" }), "servers[0]"],
    ["port 0", () => ({ servers: "nats://127.0.0.1:0" }), "servers[0]"],
    ["bare host:port with port 65536", () => ({ servers: "127.0.0.1:65536" }), "servers[0]"],
    ["a bad second server", () => ({ servers: [url, "nats://127.0.0.1:99999"] }), "servers[1]"],
    ["a bad second server in a list string", () => ({ servers: `${url},http://x` }), "servers[1]"],
    ["replicas 0", () => ({ replicas: 0 }), "replicas"],
    ["replicas 6 (JetStream keeps at most 5)", () => ({ replicas: 6 }), "replicas"],
    ["replicas 2.5", () => ({ replicas: 2.5 }), "replicas"],
    ['replicas "3" (a string)', () => ({ replicas: "3" }), "replicas"],
    [
      "connection.publishRetryMs 0",
      () => ({ connection: { publishRetryMs: 0 } }),
      "connection.publishRetryMs",
    ],
    [
      "connection.operationTimeoutMs 0",
      () => ({ connection: { operationTimeoutMs: 0 } }),
      "connection.operationTimeoutMs",
    ],
    [
      "connection.drainTimeoutMs -1",
      () => ({ connection: { drainTimeoutMs: -1 } }),
      "connection.drainTimeoutMs",
    ],
    [
      "connection.connectTimeoutMs NaN",
      () => ({ connection: { connectTimeoutMs: Number.NaN } }),
      "connection.connectTimeoutMs",
    ],
    [
      "connection.reconnectTimeWaitMs as a string",
      () => ({ connection: { reconnectTimeWaitMs: "100" } }),
      "connection.reconnectTimeWaitMs",
    ],
    [
      "connection.maxReconnectAttempts 1.5",
      () => ({ connection: { maxReconnectAttempts: 1.5 } }),
      "connection.maxReconnectAttempts",
    ],
    [
      "connection.backoff.initialMs 0",
      () => ({ connection: { backoff: { initialMs: 0 } } }),
      "connection.backoff.initialMs",
    ],
    [
      "connection.backoff.jitter 1.5",
      () => ({ connection: { backoff: { jitter: 1.5 } } }),
      "connection.backoff.jitter",
    ],
    [
      "connection.backoff.maxMs below initialMs",
      () => ({ connection: { backoff: { initialMs: 500, maxMs: 100 } } }),
      "connection.backoff.maxMs",
    ],
    ["connection.backoff 5 (not an object)", () => ({ connection: { backoff: 5 } }), "connection.backoff"],
    [
      "connection.retry.attempts 0",
      () => ({ connection: { retry: { attempts: 0 } } }),
      "connection.retry.attempts",
    ],
    ['connection.retry "x" (not an object)', () => ({ connection: { retry: "x" } }), "connection.retry"],
    ["connection 5 (not an object)", () => ({ connection: 5 }), "connection"],
    ['unknown option "sever"', () => ({ sever: url }), "sever"],
    ['unknown option "connection.retries"', () => ({ connection: { retries: 3 } }), "connection.retries"],
    [
      'unknown option "connection.backoff.factor"',
      () => ({ connection: { backoff: { factor: 2 } } }),
      "connection.backoff.factor",
    ],
    ['prefix "a.b" (two subject tokens)', () => ({ prefix: "a.b" }), "prefix"],
    ['prefix "a*"', () => ({ prefix: "a*" }), "prefix"],
    ['prefix ""', () => ({ prefix: "" }), "prefix"],
    ['name ""', () => ({ name: "" }), "name"],
    ['inspect "yes"', () => ({ inspect: "yes" }), "inspect"],
    ["logger {} (not a pino logger)", () => ({ logger: {} }), "logger"],
    // A name goes into the CONNECT line: one past the server's 4 KiB limit closes the connection.
    ["name of 5,000 characters", () => ({ name: "n".repeat(5000) }), "name"],
    ["name with a newline", () => ({ name: "a\nb" }), "name"],
    ["prefix of 100 characters", () => ({ prefix: "p".repeat(100) }), "prefix"],
    ["jobs 5 (not an object)", () => ({ jobs: 5 }), "jobs"],
    ["jobs.leaseMs Infinity", () => ({ jobs: { leaseMs: Number.POSITIVE_INFINITY } }), "jobs.leaseMs"],
    ["jobs.leaseMs NaN", () => ({ jobs: { leaseMs: Number.NaN } }), "jobs.leaseMs"],
    // Node fires a timer longer than 2^31 − 1 ms at once: a "never" would become "now".
    ["jobs.leaseMs beyond a timer's reach", () => ({ jobs: { leaseMs: 2 ** 31 } }), "jobs.leaseMs"],
    ["jobs.reapIntervalMs 1e12", () => ({ jobs: { reapIntervalMs: 1e12 } }), "jobs.reapIntervalMs"],
    [
      "jobs.cleanupIntervalMs beyond a timer's reach",
      () => ({ jobs: { cleanupIntervalMs: 2 ** 32 } }),
      "jobs.cleanupIntervalMs",
    ],
    ["jobs.cleanupIntervalMs -1", () => ({ jobs: { cleanupIntervalMs: -1 } }), "jobs.cleanupIntervalMs"],
    [
      "jobs.retentionMs Infinity",
      () => ({ jobs: { retentionMs: Number.POSITIVE_INFINITY } }),
      "jobs.retentionMs",
    ],
    ['jobs.takeOver "yes"', () => ({ jobs: { takeOver: "yes" } }), "jobs.takeOver"],
    [
      "connection.pingIntervalMs beyond a timer's reach",
      () => ({ connection: { pingIntervalMs: 2 ** 31 } }),
      "connection.pingIntervalMs",
    ],
    [
      "connection.drainTimeoutMs beyond a timer's reach",
      () => ({ connection: { drainTimeoutMs: 2 ** 40 } }),
      "connection.drainTimeoutMs",
    ],
    [
      "connection.backoff.maxMs Infinity",
      () => ({ connection: { backoff: { maxMs: Number.POSITIVE_INFINITY } } }),
      "connection.backoff.maxMs",
    ],
    [
      "connection.backoff.multiplier 1e9",
      () => ({ connection: { backoff: { multiplier: 1e9 } } }),
      "connection.backoff.multiplier",
    ],
    [
      "connection.retry.initialDelayMs Infinity",
      () => ({ connection: { retry: { initialDelayMs: Number.POSITIVE_INFINITY } } }),
      "connection.retry.initialDelayMs",
    ],
    [
      "connection.retry.attempts 1e9",
      () => ({ connection: { retry: { attempts: 1e9 } } }),
      "connection.retry.attempts",
    ],
  ];

  it.each(cases)("%s → InvalidArgument naming the field, no connection attempted", async (_, make, field) => {
    const options = { servers: url, logger, ...make() } as RuntimeOptions;
    const error = await createRuntime(options).then(
      async (rt) => {
        await rt.stop();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(InvalidArgument);
    expect((error as InvalidArgument).field).toBe(field);
    expect((error as InvalidArgument).message).toContain(field);
    expect(await counter.settled(), "connections to the server").toBe(0);
  });

  it("valid options to the same listener do connect (the counter sees a runtime's dial)", async () => {
    const rt = await createRuntime({
      servers: url,
      logger,
      connection: { connectTimeoutMs: 1_000, backoff: { initialMs: 1_000, maxMs: 1_000 } },
    });
    try {
      await waitUntil(() => counter.count > 0, {
        timeoutMs: 5_000,
        message: "the runtime to dial the listener",
      });
    } finally {
      await rt.stop();
    }
  });
});

/**
 * createHttpApi's tokens, checked when the API is created (its first step
 * after finding the runtime's NATS broker). A token the `Authorization`
 * header cannot carry (whitespace, nothing) could never match: it is a
 * configuration error, not a silent lockout.
 */
describe("HTTP API tokens are refused at startup", () => {
  const good = "t".repeat(16);
  const cases: Array<[string, Record<string, unknown>]> = [
    ["an empty token", { "": "w1" }],
    ["a token with a space", { "abcdefgh ijklmnopq": "w1" }],
    ["a token with a leading space", { " abcdefghijklmnopq": "w1" }],
    ["a token with a tab", { "abcdefgh\tijklmnopq": "w1" }],
    ["a token with a newline", { "abcdefghijklmnopq\n": "w1" }],
    ["a token of 5,000 characters", { ["t".repeat(5000)]: "w1" }],
    ["a token that is too short", { zq9: "w1" }],
    ["an empty identity", { [good]: "" }],
    ["an identity of 5,000 characters", { [good]: "w".repeat(5000) }],
    ["an identity that is not a string", { [good]: 7 }],
    ["no tokens", {}],
  ];
  it.each(cases)("%s → InvalidArgument naming tokens, without the token in the message", (_, tokens) => {
    let error: unknown;
    try {
      new BearerTokens(tokens as Record<string, string>);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidArgument);
    expect((error as InvalidArgument).field).toBe("tokens");
    for (const token of Object.keys(tokens)) {
      if (token.trim() !== "") expect((error as InvalidArgument).message).not.toContain(token.trim());
    }
  });

  it("a good token names its identity, and only it", () => {
    const tokens = new BearerTokens({ [good]: "worker-1" });
    expect(tokens.identify(good)).toMatchObject({ identity: "worker-1", role: "worker" });
    expect(tokens.identify(`${good}x`)).toBeUndefined();
  });
});

describe("replicas", () => {
  const withEnv = <T>(value: string | undefined, run: () => T): T => {
    const before = process.env.JETSTATE_REPLICAS;
    if (value === undefined) delete process.env.JETSTATE_REPLICAS;
    else process.env.JETSTATE_REPLICAS = value;
    try {
      return run();
    } finally {
      if (before === undefined) delete process.env.JETSTATE_REPLICAS;
      else process.env.JETSTATE_REPLICAS = before;
    }
  };

  it("defaults to 1, else JETSTATE_REPLICAS; the option wins over the variable", () => {
    expect(withEnv(undefined, () => resolveOptions({}).replicas)).toBe(1);
    expect(withEnv("3", () => resolveOptions({}).replicas)).toBe(3);
    expect(withEnv("3", () => resolveOptions({ replicas: 5 }).replicas)).toBe(5);
  });

  it.each(["0", "6", "2.5", "three"])(
    "JETSTATE_REPLICAS=%s → InvalidArgument naming replicas and the variable",
    (value) => {
      const error = withEnv(value, () => {
        try {
          resolveOptions({});
        } catch (e) {
          return e;
        }
        return undefined;
      });
      expect(error).toBeInstanceOf(InvalidArgument);
      expect(error).toMatchObject({ field: "replicas" });
      expect((error as Error).message).toContain("JETSTATE_REPLICAS");
    },
  );
});

describe("the default logger's level", () => {
  const withEnv = async <T>(vars: Record<string, string | undefined>, run: () => Promise<T>): Promise<T> => {
    const before = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
    const set = (values: Record<string, string | undefined>) => {
      for (const [k, v] of Object.entries(values)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    };
    set(vars);
    try {
      return await run();
    } finally {
      set(before);
    }
  };

  /** A runtime that was made after all: stopped, so the test fails on its assertion, not a leak. */
  const stopped = async (rt: { stop(): Promise<void> }) => {
    await rt.stop();
    return undefined;
  };

  it.each([
    ["JETSTATE_LOG_LEVEL", { JETSTATE_LOG_LEVEL: "verbose", LOG_LEVEL: undefined }],
    ["LOG_LEVEL", { JETSTATE_LOG_LEVEL: undefined, LOG_LEVEL: "loud" }],
  ])(
    "a level pino does not know in %s → InvalidArgument naming logger and the variable",
    async (name, vars) => {
      const error = await withEnv(vars, () => createRuntime({ broker: "memory" }).then(stopped, (e) => e));
      expect(error).toBeInstanceOf(InvalidArgument);
      expect(error).toMatchObject({ field: "logger" });
      expect((error as Error).message).toContain(name);
    },
  );

  it("a known level is taken", async () => {
    const rt = await withEnv({ JETSTATE_LOG_LEVEL: "silent", LOG_LEVEL: undefined }, () =>
      createRuntime({ broker: "memory" }),
    );
    try {
      expect(rt.logger.level).toBe("silent");
    } finally {
      await rt.stop();
    }
  });
});
