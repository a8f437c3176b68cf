/**
 * A queue's pool lost with its permits stream is seeded by the taker whose
 * look-up made the pool's consumer, and by no one else: every later take
 * finds the consumer. A seed that does not get through (one of its requests
 * lost: here the count of the pool's subject times out once, as a request
 * under load or a connection cut does; or its runtime stopped between the
 * consumer and the publishes) is not tried again, by that runtime or any
 * other: the pool stays empty and the queue's limited work stops for good,
 * the very loss the seeding was to repair. Now a take whose pool gave no
 * permit for a while counts it and seeds it when it holds none (at once on
 * the runtime whose seed failed): the cases below, and one where every
 * permit is held, which is counted and never seeded. The oracle: the
 * permits stream's count on the pool's subject and the consumer's info,
 * read by the test's own client, and the seeds' warns.
 */
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames, permitsConsumer } from "../../src/adapters/names.ts";
import type { NatsJobBroker } from "../../src/adapters/nats/job-broker.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { natsQueueControls } from "../../src/adapters/nats/queue-controls.ts";
import type { QueueControls } from "../../src/adapters/queue-controls.ts";
import { queuesFace } from "../../src/api/queues.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { type Logger, silentLogger } from "../../src/kernel/logger.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

const names = brokerNames("jetstate");

/** A request lost on its way (nats.js names it so): the server's answer never came. */
const lostRequest = () => Object.assign(new Error("TIMEOUT"), { name: "TimeoutError" });

describe("a lost pool whose seed did not get through", () => {
  let server: NatsServerHandle;
  let raw: NatsConnection;
  let jsm: JetStreamManager;
  const stops: Array<() => Promise<void>> = [];
  const stopOf = new WeakMap<QueueControls, () => Promise<void>>();
  beforeAll(async () => {
    server = await startNatsServer();
    raw = await connect({ servers: server.url, name: "raw" });
    jsm = await jetstreamManager(raw);
  });
  afterAll(async () => {
    for (const stop of stops) await stop();
    await raw?.close();
    await server?.dispose();
  });

  /**
   * One runtime's queue controls on a client of its own; `faults` counts the
   * counts of a permits subject (stream info with a subject filter) to lose.
   */
  const replica = async (faults = { left: 0 }, log: Logger = silentLogger()): Promise<QueueControls> => {
    const core = await createRuntimeCore({ servers: server.url, logger: silentLogger() });
    const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "seed-once" });
    let stopped: Promise<void> | undefined;
    const stop = () => {
      stopped ??= (async () => {
        await broker.close();
        await core.stop();
      })();
      return stopped;
    };
    stops.push(stop);
    const inner = broker.jetstream;
    const faulty = new Proxy(inner, {
      get(target, key) {
        const value = Reflect.get(target, key, target);
        if (key !== "handles") return typeof value === "function" ? value.bind(target) : value;
        return async (nc: NatsConnection) => {
          const handles = await target.handles(nc);
          const streams = new Proxy(handles.jsm.streams, {
            get(s, k) {
              const v = Reflect.get(s, k, s);
              if (k !== "info" || typeof v !== "function") return typeof v === "function" ? v.bind(s) : v;
              return (name: string, opts?: { subjects_filter?: string }) => {
                if (opts?.subjects_filter && faults.left > 0) {
                  faults.left--;
                  return Promise.reject(lostRequest());
                }
                return v.call(s, name, opts);
              };
            },
          });
          const seenJsm = new Proxy(handles.jsm, {
            get: (m, k) => (k === "streams" ? streams : Reflect.get(m, k, m)),
          });
          return { ...handles, jsm: seenJsm };
        };
      },
    }) as NatsJobBroker;
    const controls = natsQueueControls(core, faulty, log);
    stopOf.set(controls, stop);
    return controls;
  };
  const face = (controls: QueueControls) =>
    queuesFace(controls, new Set(["admin"] as const), () => Date.now());
  const permitsOf = async (queue: string): Promise<number> => {
    const subject = names.permitsSubject(queue, "concurrency");
    const info = await jsm.streams.info(names.permitsStream, { subjects_filter: subject });
    return info.state.subjects?.[subject] ?? 0;
  };
  /** The permits stream deleted by hand and made again empty (as `rt.admin.provision()` makes it). */
  const deleteStream = async () => {
    const config = (await jsm.streams.info(names.permitsStream)).config;
    await jsm.streams.delete(names.permitsStream);
    await jsm.streams.add(config);
  };
  /**
   * A queue of 2 permits taken and given back by two runtimes (the pool works), its permits
   * stream then deleted by hand and made again empty; A's takes (tried again as the gate tries
   * them: the first one's pull misses its heartbeats on the consumer deleted) find the consumer
   * gone and make it, its seed's count lost: the takes until then, said (`firsts`).
   */
  const seedLost = async (queue: string) => {
    await face(await replica()).configure(queue, { maxConcurrency: 2 });
    const faults = { left: 1 };
    const [a, b] = [await replica(faults), await replica()];
    for (const r of [a, b]) {
      const permit = await r.takePermit(queue, "concurrency", AbortSignal.timeout(10_000));
      expect(permit, "a permit before the deletion").toBeDefined();
      permit?.release();
    }
    expect(await permitsOf(queue)).toBe(2);
    await deleteStream();
    const firsts: string[] = [];
    for (let tries = 0; faults.left > 0 && tries < 10; tries++) {
      const permit = await a
        .takePermit(queue, "concurrency", AbortSignal.timeout(4_000))
        .catch((error: unknown) => String(error));
      firsts.push(typeof permit === "string" ? permit : permit ? "a permit" : "none");
      if (typeof permit === "object") permit?.release();
    }
    expect(faults.left, `the seed's count was reached: ${firsts.join("; ")}`).toBe(0);
    return { a, b, firsts: firsts.join("; ") };
  };

  it("one request of the seed lost: no take of any runtime ever finds a permit again (0 of 2, for good)", async () => {
    const queue = "seed_once";
    const { a, b, firsts } = await seedLost(queue);
    const consumer = await jsm.consumers.info(names.permitsStream, permitsConsumer(queue, "concurrency"));
    // Every later take, of A again and of B, finds the consumer made: none seeds, none gets a permit.
    const later = [];
    for (const r of [a, b, a, b]) {
      const permit = await r
        .takePermit(queue, "concurrency", AbortSignal.timeout(4_000))
        .catch(() => undefined);
      later.push(permit !== undefined);
      permit?.release();
    }
    expect(
      { consumerMade: consumer.config.durable_name, laterTakes: later, permits: await permitsOf(queue) },
      `the takes after the deletion until the seed: ${firsts}`,
    ).toEqual({
      consumerMade: permitsConsumer(queue, "concurrency"),
      laterTakes: [true, true, true, true],
      permits: 2,
    });
  }, 60_000);

  it("the runtime whose seed failed stops: another's take whose pool gave no permit for a while seeds it (2 of 2)", async () => {
    const queue = "seed_killed";
    const { a, b } = await seedLost(queue);
    await stopOf.get(a)?.();
    // B's takes (a failed pull tried again) until one gets a permit: its pulls give none, then its count finds none.
    const tries: string[] = [];
    let permit: Awaited<ReturnType<QueueControls["takePermit"]>>;
    for (let i = 0; !permit && i < 8; i++) {
      permit = await b
        .takePermit(queue, "concurrency", AbortSignal.timeout(4_000))
        .catch((error: unknown) => void tries.push(String(error)));
      if (!permit) tries.push("none");
    }
    permit?.release();
    expect({ taken: permit !== undefined, permits: await permitsOf(queue) }, tries.join("; ")).toEqual({
      taken: true,
      permits: 2,
    });
  }, 60_000);

  it("every permit held, past the count's wait: the pool is counted, not seeded (no warn, 2 stay)", async () => {
    const queue = "seed_held";
    const leaseMs = 60_000;
    await face(await replica()).configure(queue, { maxConcurrency: 2, permitLeaseMs: leaseMs });
    const { lines, logger } = capturedLog("warn");
    const [a, b] = [await replica({ left: 0 }, logger), await replica()];
    // The stream made again, and seeded by B: the pool's ids new to the server within its window.
    await deleteStream();
    const held = [];
    for (let i = 0; held.length < 2 && i < 10; i++) {
      const permit = await b
        .takePermit(queue, "concurrency", AbortSignal.timeout(4_000), leaseMs)
        .catch(() => undefined);
      if (permit) held.push(permit);
    }
    expect(held, "both permits held by B").toHaveLength(2);
    // A's takes give none for longer than the wait before a count (5 s): a count finds 2, seeds none.
    const started = Date.now();
    const taken = [];
    while (Date.now() - started < 12_000) {
      const permit = await a
        .takePermit(queue, "concurrency", AbortSignal.timeout(4_000), leaseMs)
        .catch(() => undefined);
      taken.push(permit !== undefined);
    }
    for (const permit of held) permit.release();
    expect({
      taken: taken.some(Boolean),
      permits: await permitsOf(queue),
      seeds: lines.filter((l) => /permits were gone/.test(l.msg)).map((l) => l.msg),
    }).toEqual({ taken: false, permits: 2, seeds: [] });
  }, 60_000);
});
