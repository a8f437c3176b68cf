/**
 * How a runtime's record watches read a record: once per text for every
 * watch, frozen; a text this broker wrote (its own record writes, three a
 * small job) without the schema check, any other text checked, so a record
 * no jetstate wrote is refused as unreadable, never handed over as a record.
 */
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNatsBroker, type NatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntimeCore, type RuntimeCore } from "../../src/api/runtime-core.ts";
import { encodeRecord } from "../../src/kernel/job-record-codec.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { record } from "../unit/fake-job-port.ts";

describe("a watched record's decode", () => {
  let server: NatsServerHandle;
  let core: RuntimeCore & { stop(): Promise<void> };
  let broker: NatsBroker;
  beforeAll(async () => {
    server = await startNatsServer();
    core = await createRuntimeCore({ servers: server.url, logger: pino({ level: "silent" }), prefix: "dec" });
    broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "dec-a" });
  });
  afterAll(async () => {
    await broker?.close();
    await core?.stop();
    await server?.dispose();
  });

  it("a record this broker wrote reads back as written, frozen, the same object for every watch", async () => {
    const written = record({ id: "jdec1" });
    const revision = await broker.createRecord(written);
    const committed = { ...written, phase: "committed" as const, status: "running" as const };
    await broker.updateRecord(committed, revision);
    for (const each of [written, committed]) {
      const text = encodeRecord(each);
      const read = broker.jetstream.decodeWatched(text);
      expect(read).toEqual(each);
      expect(Object.isFrozen(read) && Object.isFrozen(read.settings) && Object.isFrozen(read.counts)).toBe(
        true,
      );
      expect(broker.jetstream.decodeWatched(text)).toBe(read);
    }
  });

  it("a text no jetstate wrote is checked: an unreadable one is refused, one that differs from ours too", async () => {
    expect(() => broker.jetstream.decodeWatched(JSON.stringify({ v: 1, id: "jdec2", queue: "q" }))).toThrow(
      /job record jdec2 is unreadable/,
    );
    const ours = record({ id: "jdec3" });
    await broker.createRecord(ours);
    // Another writer's text for the same job, with a field this version cannot read.
    const theirs = JSON.stringify({ ...ours, counts: { ...ours.counts, done: "one" } });
    expect(() => broker.jetstream.decodeWatched(theirs)).toThrow(/job record jdec3 is unreadable: counts/);
    expect(() => broker.jetstream.decodeWatched(JSON.stringify({ v: 2, id: "jdec4" }))).toThrow(
      /unsupported job record version 2/,
    );
  });
});
