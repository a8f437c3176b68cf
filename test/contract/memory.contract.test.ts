import { describe, expect, it } from "vitest";
import {
  createMemoryBroker,
  createMemoryServer,
  type MemoryBroker,
} from "../../src/adapters/memory/memory-broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import type { LaneLease } from "../../src/adapters/task-queue.ts";
import { ManualClock } from "../../src/kernel/clock.ts";
import { InvalidArgument, RuntimeStopped } from "../../src/kernel/errors.ts";
import { type BrokerHarness, brokerContract } from "./broker.contract.ts";
import { newRecord, taskBodies } from "./contract-helpers.ts";
import { delayedContract } from "./delayed.contract.ts";

/** Lets what the clock released run: resolved leases reach their consumers, loops wait again. */
const settle = async () => {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
};

const harness = async (): Promise<BrokerHarness> => {
  const clock = new ManualClock();
  const server = createMemoryServer({ clock });
  const broker = createMemoryBroker({ server, holder: "contract-a" });
  const peers: MemoryBroker[] = [];
  return {
    broker,
    clock,
    ackWaitMs: 300,
    writeRawRecord: async (id, text) => {
      memoryServerState(server).records.put("test", id, text);
    },
    advance: async (ms) => {
      clock.advance(ms);
      await settle();
    },
    peer: async (holder) => {
      const peer = createMemoryBroker({ server, holder });
      peers.push(peer);
      return peer;
    },
    dispose: async () => {
      for (const peer of peers) await peer.close();
      await broker.close();
      server.close();
      expect(clock.pending).toBe(0); // every lease and delay timer cleared
    },
  };
};

brokerContract("memory", harness);
delayedContract("memory", harness);

describe("memory broker: beyond the contract", () => {
  it("close() clears every timer of its own server, ends its loops, and later calls fail RuntimeStopped", async () => {
    const clock = new ManualClock();
    const broker = createMemoryBroker({ clock });
    const record = newRecord(3, 1000);
    await broker.createRecord(record);
    await broker.publishTasks(record, taskBodies(3), new AbortController().signal);
    await broker.createConsumer(record.queue, record.id, record.settings);
    let leased = 0;
    const consuming = broker.consumeTasks(
      record.queue,
      record.id,
      8,
      () => {
        leased++;
      },
      new AbortController().signal,
    );
    const reading = broker.readResults(
      record.queue,
      record.id,
      () => undefined,
      new AbortController().signal,
    );
    const processing = broker.processExhausted(new AbortController().signal);
    await settle();
    expect(leased).toBe(3);
    expect(clock.pending).toBe(3); // one lease each
    await broker.close();
    expect(clock.pending).toBe(0);
    expect(await consuming).toBe("stopped");
    await reading;
    await processing;
    await expect(broker.getRecord(record.id)).rejects.toBeInstanceOf(RuntimeStopped);
    await expect(broker.leases.acquire(record.id, 1000)).rejects.toBeInstanceOf(RuntimeStopped);
  });

  it("a broker closed on a shared server leaves the others running", async () => {
    const server = createMemoryServer({ clock: new ManualClock() });
    const a = createMemoryBroker({ server });
    const b = createMemoryBroker({ server });
    const record = newRecord(1, 1000);
    await a.createRecord(record);
    await a.close();
    expect((await b.getRecord(record.id))?.record).toEqual(record);
    await expect(a.listRecords()).rejects.toBeInstanceOf(RuntimeStopped);
    server.close();
    await expect(b.listRecords()).rejects.toBeInstanceOf(RuntimeStopped);
  });

  it("exhausted tasks are captured only once dead letters are set up, as advisories on NATS", async () => {
    const clock = new ManualClock();
    const broker = createMemoryBroker({ clock });
    const record = newRecord(1, 1000, { maxDeliver: 1 });
    await broker.createRecord(record);
    await broker.publishTasks(record, taskBodies(1), new AbortController().signal);
    await broker.createConsumer(record.queue, record.id, record.settings);
    const stop = new AbortController();
    void broker.consumeTasks(record.queue, record.id, 8, () => undefined, stop.signal);
    await settle();
    clock.advance(1500);
    void broker.processExhausted(stop.signal);
    await settle();
    // Its advisory went nowhere: not dead-lettered, not delivered again, still stored.
    expect(await broker.listDeadLetters(record.queue, record.id)).toEqual([]);
    expect(await broker.consumerCounts(record)).toEqual({
      waiting: 0,
      held: 0,
      redelivered: 0,
    });
    stop.abort();
    await broker.close();
  });

  it("message ids de-duplicate for 2 minutes of the clock, then a publish with the same id lands", async () => {
    const clock = new ManualClock();
    const broker = createMemoryBroker({ clock });
    const read = async () => {
      const bodies: string[] = [];
      const stop = new AbortController();
      const reading = broker.readResults("q1", "j1", (body) => bodies.push(body), stop.signal);
      await settle();
      stop.abort();
      await reading;
      return bodies;
    };
    await broker.publishResults("q1", "j1", "[1]", "same");
    clock.advance(119_000);
    await broker.publishResults("q1", "j1", "[2]", "same");
    expect(await read()).toEqual(["[1]"]);
    clock.advance(1_000);
    await broker.publishResults("q1", "j1", "[3]", "same");
    expect(await read()).toEqual(["[1]", "[3]"]);
    await broker.close();
  });

  it("an exhausted task acked before its advisory is processed is not a dead letter (as nats-server 2.9 does)", async () => {
    const clock = new ManualClock();
    const broker = createMemoryBroker({ clock });
    const record = newRecord(1, 1000, { maxDeliver: 1 });
    await broker.ensureDeadLetters(record.queue);
    await broker.createRecord(record);
    await broker.publishTasks(record, taskBodies(1), new AbortController().signal);
    await broker.createConsumer(record.queue, record.id, record.settings);
    const stop = new AbortController();
    const leases: Array<{ ack(): void }> = [];
    void broker.consumeTasks(record.queue, record.id, 8, (lease) => void leases.push(lease), stop.signal);
    await settle();
    clock.advance(1500); // ran out on its last delivery: exhausted on the next delivery attempt
    await settle();
    leases[0]!.ack(); // a late answer still removes it
    void broker.processExhausted(stop.signal);
    await settle();
    expect(await broker.listDeadLetters(record.queue, record.id)).toEqual([]);
    expect(await broker.consumerCounts(record)).toEqual({
      waiting: 0,
      held: 0,
      redelivered: 0,
    });
    stop.abort();
    await broker.close();
  });

  it("a wildcard consumer made after its tasks were stored delivers them, in stream order, and only those under it", () => {
    const stream = memoryServerState(createMemoryServer({ clock: new ManualClock() })).tasks;
    stream.publish("p.tasks.q.lane.j1", "1", "m1");
    stream.publish("p.tasks.q.j2", "2", "m2");
    stream.publish("p.tasks.r.lane.j3", "3", "m3");
    stream.publish("p.tasks.q.lane.j4", "4", "m4");
    const lane = stream.putConsumer("lane.q", "p.tasks.q.lane.>", { ackWaitMs: 1000, maxDeliver: -1 });
    stream.publish("p.tasks.q.lane.j5", "5", "m5");
    const taken = [lane.takeNow(), lane.takeNow(), lane.takeNow(), lane.takeNow()];
    expect(taken.map((t) => t && [t.jobId, t.body])).toEqual([
      ["j1", "1"],
      ["j4", "4"],
      ["j5", "5"],
      undefined,
    ]);
    expect(stream.subjectConsumerNames()).toEqual([]); // a lane is not a job's consumer
  });

  it("a lane whose index is rebuilt (most of it gone) delivers each task left once, in order, and redelivers the held", async () => {
    const clock = new ManualClock();
    const broker = createMemoryBroker({ clock });
    const queue = "q";
    const publish = async (n: number) => {
      const record = { ...newRecord(1, 30_000), queue, lane: true as const };
      await broker.publishTasks(record, [`{"i":0,"p":${n}}`], new AbortController().signal);
      return record;
    };
    const records = [];
    for (let n = 0; n < 200; n++) records.push(await publish(n));
    for (const record of records.slice(0, 120)) await broker.removeTasks(record); // past half: rebuilt
    const leases: LaneLease[] = [];
    const stop = new AbortController();
    void broker.consumeLane(queue, 8, (lease) => void leases.push(lease), stop.signal);
    await settle();
    const delivered = (from: number) =>
      leases.slice(from).map((l) => [JSON.parse(l.body).p, l.deliveryCount]);
    expect(delivered(0)).toEqual(Array.from({ length: 80 }, (_, k) => [120 + k, 1]));
    for (const lease of leases.slice(0, 60)) lease.ack(); // rebuilt again, under the lane reading it
    for (let n = 200; n < 210; n++) await publish(n);
    await settle();
    expect(delivered(80)).toEqual(Array.from({ length: 10 }, (_, k) => [200 + k, 1]));
    for (const lease of leases.slice(60, 65)) lease.nak();
    await settle();
    expect(delivered(90)).toEqual([180, 181, 182, 183, 184].map((p) => [p, 2]));
    stop.abort();
    await broker.close();
  });

  it("bad options are InvalidArgument; bad names the same permanent error NATS gives", async () => {
    expect(() => createMemoryBroker({ maxPayload: 0 })).toThrow(InvalidArgument);
    expect(() => createMemoryBroker({ prefix: "a.b" })).toThrow(InvalidArgument);
    expect(() => createMemoryBroker({ server: createMemoryServer(), clock: new ManualClock() })).toThrow(
      /clock: set it on the shared server/,
    );
    const broker = createMemoryBroker({ clock: new ManualClock() });
    await expect(broker.getRecord("a b")).rejects.toMatchObject({ _tag: "PermanentBrokerError" });
    await expect(broker.createConsumer("q", "a.b", newRecord(1, 1000).settings)).rejects.toMatchObject({
      _tag: "PermanentBrokerError",
    });
    await expect(broker.updateRecord(newRecord(1, 1000), 0)).rejects.toMatchObject({
      _tag: "PermanentBrokerError",
    });
    await broker.close();
  });
});
