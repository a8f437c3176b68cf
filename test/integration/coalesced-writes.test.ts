/**
 * The runtime's client writes what it sends in one loop turn with one socket
 * write (`adapters/nats/coalesced-writes.ts`): it reaches nats.js's internals
 * (of the version bundled), so this checks that it takes hold, after a
 * reconnect too, and that what is sent arrives whole and in order.
 */
import net from "node:net";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "xstate";
import { writesCoalesced } from "../../src/adapters/nats/coalesced-writes.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { connectionStateName } from "../../src/machines/connection.machine.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

type Core = Awaited<ReturnType<typeof createRuntimeCore>>;

/** The socket writes (system calls: a `write` or a `writev`) made while `run` runs, and a loop turn after. */
const socketWrites = async (run: () => void): Promise<number> => {
  const proto = net.Socket.prototype as unknown as { _writeGeneric: (...args: unknown[]) => unknown };
  const original = proto._writeGeneric;
  let writes = 0;
  proto._writeGeneric = function (this: unknown, ...args: unknown[]) {
    writes++;
    return original.apply(this, args);
  };
  try {
    run();
    await new Promise<void>((resolve) => setImmediate(resolve));
    await new Promise<void>((resolve) => setImmediate(resolve));
  } finally {
    proto._writeGeneric = original;
  }
  return writes;
};

/** Publishes `n` messages, each from a microtask of its own (as jobs' awaits do). */
const publishApart = (nc: NatsConnection, subject: string, n: number) => {
  let chain = Promise.resolve();
  for (let i = 0; i < n; i++)
    chain = chain.then(() => {
      nc.publish(subject, String(i));
    });
};

describe("the runtime's client coalesces its writes", () => {
  let server: NatsServerHandle;
  let core: Core | undefined;

  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterEach(async () => {
    await core?.stop();
    core = undefined;
  });
  afterAll(async () => {
    await server?.dispose();
  });

  const connected = async (): Promise<NatsConnection> => {
    core ??= await createRuntimeCore({
      servers: server.url,
      name: "coalesced-writes",
      logger: silentLogger(),
      connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
    });
    const c = core;
    await waitFor(c.connection.actor, (s) => connectionStateName(s.value) === "connected", {
      timeout: 15_000,
    });
    const nc = c.connection.current();
    if (!nc) throw new Error("no client");
    return nc;
  };

  /** 50 messages sent from 50 microtasks of one loop turn: how many socket writes, and whether all came, in order. */
  const sendFifty = async (nc: NatsConnection, subject: string) => {
    const got: string[] = [];
    const sub = nc.subscribe(subject, {
      callback: (_, m) => {
        got.push(m.string());
      },
    });
    await nc.flush();
    const writes = await socketWrites(() => publishApart(nc, subject, 50));
    await nc.flush();
    sub.unsubscribe();
    return { writes, got };
  };

  it("50 messages from 50 microtasks go out in one write, whole and in order", async () => {
    const nc = await connected();
    expect(writesCoalesced(nc)).toBe(true);
    const { writes, got } = await sendFifty(nc, "coalesced.one");
    expect(got).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    // Without it: one write per microtask that sent (50).
    expect(writes).toBeLessThanOrEqual(2);
  });

  it("a reconnect's new transport is corked too", async () => {
    const nc = await connected();
    const before = (nc as unknown as { protocol: { transport: unknown } }).protocol.transport;
    await server.restart();
    await waitFor(
      core!.connection.actor,
      (s) =>
        connectionStateName(s.value) === "connected" &&
        (nc as unknown as { protocol: { transport: unknown } }).protocol.transport !== before,
      { timeout: 15_000 },
    );
    // The same client, reconnected (a new transport): still coalesced, still delivering.
    expect(core!.connection.current()).toBe(nc);
    expect(writesCoalesced(nc)).toBe(true);
    const { writes, got } = await sendFifty(nc, "coalesced.two");
    expect(got).toHaveLength(50);
    expect(writes).toBeLessThanOrEqual(2);
  });
});
