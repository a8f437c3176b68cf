/**
 * The NATS broker decodes a record its watches read once per text: a
 * runtime with a worker has two watches, and each read every write. The
 * oracles: object identity says what was decoded once and shared; the
 * records built by the test say what each text holds.
 */
import { describe, expect, it } from "vitest";
import { NatsJobBroker } from "../../src/adapters/nats/job-broker.ts";
import type { NatsContext } from "../../src/adapters/nats/nats-context.ts";
import { encodeRecord } from "../../src/kernel/job-record-codec.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { record } from "./fake-job-port.ts";

const broker = () =>
  new NatsJobBroker(
    { options: { prefix: "jetstate", replicas: 1 }, logger: silentLogger() } as unknown as NatsContext,
    { retentionMs: 60_000, memoryConsumers: false },
  );

describe("NatsJobBroker.decodeWatched", () => {
  it("gives every watch the same record for the same text, and decodes a new text", () => {
    const b = broker();
    const text = encodeRecord(record({ id: "j1" }));
    const first = b.decodeWatched(text);
    // Another string with the same characters: what a second watch reads.
    const second = b.decodeWatched(`${text} `.trimEnd());
    expect(second).toBe(first);
    expect(first).toEqual(record({ id: "j1" }));
    const other = b.decodeWatched(encodeRecord(record({ id: "j2" })));
    expect(other.id).toBe("j2");
    // Shared, so frozen: one reader cannot change what the others see.
    expect(Object.isFrozen(first) && Object.isFrozen(first.counts) && Object.isFrozen(first.settings)).toBe(
      true,
    );
  });

  it("keeps the last 128 texts only, and caches no failure", () => {
    const b = broker();
    const oldest = encodeRecord(record({ id: "j0" }));
    const kept = b.decodeWatched(oldest);
    for (let n = 1; n <= 128; n++) b.decodeWatched(encodeRecord(record({ id: `j${n}` })));
    // Pushed out: decoded again, a new object equal to the first.
    const again = b.decodeWatched(oldest);
    expect(again).not.toBe(kept);
    expect(again).toEqual(kept);
    expect(() => b.decodeWatched("{not a record")).toThrow();
    expect(() => b.decodeWatched("{not a record")).toThrow();
  });
});
