/**
 * First contact with a runtime: the broker it picks and what it says when it cannot
 * reach NATS. A production process must not end up in memory by accident (its jobs
 * would vanish with it), and "no NATS connection" must say which server and why.
 */
import { afterEach, describe, expect, it, onTestFinished, vi } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { ConnectionUnavailable, InvalidArgument } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { closedAddress } from "../harness/nats-process.ts";
import { waitUntil } from "../harness/wait.ts";

const runtimes: Runtime[] = [];
afterEach(async () => {
  vi.unstubAllEnvs();
  await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
});

describe("broker choice under NODE_ENV=production", () => {
  it("refuses to fall back to memory, with a typed error that says what to set", async () => {
    vi.stubEnv("NODE_ENV", "production");
    vi.stubEnv("NATS_URL", undefined);
    const error = await createRuntime({ logger: silentLogger() }).then(
      (rt) => {
        runtimes.push(rt);
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(InvalidArgument);
    expect(error).toMatchObject({ field: "broker" });
    const { message } = error as InvalidArgument;
    expect(message).toContain("NODE_ENV=production");
    expect(message).toContain('broker: "memory"');
    expect(message).toContain("NATS_URL");
    expect(message).toContain("servers");
  });

  it('starts in memory when broker: "memory" is explicit', async () => {
    vi.stubEnv("NODE_ENV", "production");
    vi.stubEnv("NATS_URL", undefined);
    const rt = await createRuntime({ broker: "memory", logger: silentLogger() });
    runtimes.push(rt);
    expect(rt.broker).toBe("memory");
    const job = await rt.jobs.submit({ queue: "q", tasks: [1] });
    rt.workers.start<number, number>({ queue: "q", handler: (t) => t.payload });
    expect((await job.done()).status).toBe("succeeded");
  });

  it('refuses broker: "memory" with servers, naming both: the servers would be ignored', async () => {
    const error = await createRuntime({
      broker: "memory",
      servers: "nats://127.0.0.1:4222",
      logger: silentLogger(),
    }).then(
      (rt) => {
        runtimes.push(rt);
        return rt.broker;
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(InvalidArgument);
    expect(error).toMatchObject({ field: "servers" });
    expect((error as InvalidArgument).message).toMatch(/^servers: .*broker: "memory"/);
  });

  it("outside production, no servers still means memory", async () => {
    vi.stubEnv("NODE_ENV", "development");
    vi.stubEnv("NATS_URL", undefined);
    const rt = await createRuntime({ logger: silentLogger() });
    runtimes.push(rt);
    expect(rt.broker).toBe("memory");
  });
});

describe("no NATS at the given server", () => {
  it("names the server and the cause (ECONNREFUSED) in the error and the connection's last error", async () => {
    const closed = await closedAddress();
    onTestFinished(closed.release);
    const server = `nats://${closed.host}:${closed.port}`;
    const rt = await createRuntime({
      servers: server,
      logger: silentLogger(),
      connection: { operationTimeoutMs: 1500 },
    });
    runtimes.push(rt);
    const error = await rt.jobs.submit({ queue: "q", tasks: [1] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ConnectionUnavailable);
    const { message } = error as ConnectionUnavailable;
    expect(message).toContain("no NATS connection");
    expect(message).toContain(`${closed.host}:${closed.port}`);
    expect(message).toContain("ECONNREFUSED");

    await waitUntil(() => rt.connection.snapshot().lastError !== null, {
      timeoutMs: 5000,
      message: "the connection recorded why it failed",
    });
    expect(rt.connection.snapshot().lastError).toContain(`${closed.host}:${closed.port}`);
    expect(rt.connection.snapshot().lastError).toContain("ECONNREFUSED");
  });
});
