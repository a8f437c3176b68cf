import { existsSync } from "node:fs";
import { jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { startNatsServer } from "./nats-server.ts";
import { waitUntil } from "./wait.ts";

describe("waitUntil", () => {
  it("resolves once the predicate turns true", async () => {
    let calls = 0;
    await waitUntil(() => ++calls >= 3, { timeoutMs: 1_000, intervalMs: 1, message: "three calls" });
    expect(calls).toBe(3);
  });

  it("rejects at the deadline with the message and the predicate's last error", async () => {
    await expect(
      waitUntil(
        () => {
          throw new Error("not yet");
        },
        { timeoutMs: 50, intervalMs: 5, message: "the impossible" },
      ),
    ).rejects.toThrow(/timed out after \d+ ms .*: the impossible; last error: not yet/);
  });
});

describe("startNatsServer", () => {
  it("kill + restart: same port, the client reconnects, a file stream survives, dispose removes the store", async () => {
    const server = await startNatsServer();
    try {
      expect(server.url).toMatch(/^nats:\/\/[^:]+:\d+$/);
      expect(server.url.endsWith(`:${server.port}`)).toBe(true);
      expect(server.monitorUrl).toMatch(/^http:\/\/[^:]+:\d+$/);
      expect(existsSync(server.storeDir)).toBe(true);
      expect(await server.version()).toMatch(/^\d+\.\d+\.\d+/);
      expect(await server.connectionCount()).toBe(0);

      const nc = await connect({ servers: server.url, reconnectTimeWait: 50, maxReconnectAttempts: -1 });
      const statuses: string[] = [];
      const watching = (async () => {
        for await (const status of nc.status()) statuses.push(status.type);
      })();
      try {
        expect(await server.connectionCount()).toBe(1);
        const jsm = await jetstreamManager(nc);
        await jsm.streams.add({ name: "HARNESS", subjects: ["harness.>"], storage: StorageType.File });

        const port = server.port;
        await server.kill();
        await waitUntil(() => statuses.includes("disconnect"), {
          timeoutMs: 5_000,
          message: `client to see "disconnect" after kill (saw ${statuses.join(",")})`,
        });

        await server.restart();
        expect(server.port).toBe(port);
        await waitUntil(() => statuses.includes("reconnect"), {
          timeoutMs: 5_000,
          message: `client to see "reconnect" after restart (saw ${statuses.join(",")})`,
        });
        expect(await server.connectionCount()).toBe(1);
        const info = await jsm.streams.info("HARNESS");
        expect(info.config.name).toBe("HARNESS");
        expect(info.config.storage).toBe(StorageType.File);
      } finally {
        await nc.close();
        await watching;
      }

      await server.stop();
      await server.stop(); // idempotent
    } finally {
      await server.dispose();
    }
    await server.dispose(); // idempotent
    expect(existsSync(server.storeDir)).toBe(false);
  });

  it("restart after a clean stop keeps the store dir", async () => {
    const server = await startNatsServer();
    try {
      const nc = await connect({ servers: server.url });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "KEPT", subjects: ["kept.>"], storage: StorageType.File });
      await nc.close();

      await server.stop();
      await server.restart();

      const nc2 = await connect({ servers: server.url });
      try {
        expect((await (await jetstreamManager(nc2)).streams.info("KEPT")).config.name).toBe("KEPT");
      } finally {
        await nc2.close();
      }
    } finally {
      await server.dispose();
    }
  });

  it("restartEmpty comes back on the same port with no stream, and a connected client reconnects", async () => {
    const server = await startNatsServer();
    try {
      const nc = await connect({ servers: server.url, reconnectTimeWait: 50, maxReconnectAttempts: -1 });
      try {
        const jsm = await jetstreamManager(nc);
        await jsm.streams.add({ name: "LOST", subjects: ["lost.>"], storage: StorageType.File });
        const port = server.port;
        await server.restartEmpty();
        expect(server.port).toBe(port);
        expect(existsSync(server.storeDir)).toBe(true);
        // The same client, reconnected: the stream it made is gone with the store.
        await waitUntil(
          async () => {
            const names: string[] = [];
            for await (const name of jsm.streams.names()) names.push(name);
            return names.length === 0;
          },
          { timeoutMs: 10_000, message: "the reconnected client to list no stream" },
        );
      } finally {
        await nc.close();
      }
    } finally {
      await server.dispose();
    }
  });

  it("a server that cannot start fails with the tail of its stderr", async () => {
    const started = startNatsServer({ args: ["--no-such-flag"] });
    await expect(started).rejects.toThrow(/flag provided but not defined/);
  });
});
