import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scanBucket } from "../../src/adapters/nats/streams.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

/**
 * Listing job records and leases (`scanBucket`) while other processes write
 * them: every pass ends (the keys iterator of nats.js was seen to hang here),
 * and a pass after the writes equals the writer's own ledger of live keys.
 */
describe("scanBucket", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
  });
  afterAll(async () => {
    await nc?.close();
    await server?.dispose();
  });

  it("ends every pass while keys are created, updated and deleted, and the last equals the ledger", async () => {
    const kv = await new Kvm(nc).create("scan", { history: 1 });
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    expect(await scanBucket(js, jsm, "scan")).toEqual(new Map());
    const ledger = new Map<string, string>();
    let writing = true;
    const writer = (async () => {
      for (let i = 0; i < 400; i++) {
        await kv.create(`k${i}`, "created");
        await kv.put(`k${i}`, `updated ${i}`);
        ledger.set(`k${i}`, `updated ${i}`);
        if (i % 7 === 0) {
          await kv.delete(`k${i}`);
          ledger.delete(`k${i}`);
        }
        if (i % 11 === 0) {
          await kv.purge(`k${i}`);
          ledger.delete(`k${i}`);
        }
      }
      writing = false;
    })();
    let passes = 0;
    while (writing) {
      const pass = await Promise.race([
        scanBucket(js, jsm, "scan"),
        // Generous: a loaded machine makes a pass slow; the old listing never ended at all.
        new Promise<"hung">((resolve) => setTimeout(() => resolve("hung"), 20_000)),
      ]);
      expect(pass).not.toBe("hung");
      passes += 1;
    }
    await writer;
    expect(passes).toBeGreaterThan(5);
    expect(await scanBucket(js, jsm, "scan")).toEqual(ledger);
  });
});
