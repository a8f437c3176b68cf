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
import { describe, expect, it } from "vitest";
import { brokerNames, permitsConsumer } from "../../src/adapters/names.ts";
import type { QueueControls } from "../../src/adapters/queue-controls.ts";
import { type Logger, silentLogger } from "../../src/kernel/logger.ts";
import { type ControlsHandles, lostRequest, useControlsReplicas } from "../harness/controls-replicas.ts";
import { capturedLog } from "../harness/log-lines.ts";

const names = brokerNames("jetstate");

describe("a lost pool whose seed did not get through", () => {
  const controlsReplicas = useControlsReplicas("seed-once");
  const { face, permitsOf } = controlsReplicas;
  const deleteStream = controlsReplicas.deletePermitsStream;
  const stopOf = new WeakMap<QueueControls, () => Promise<void>>();
  /**
   * One runtime's queue controls on a client of its own; `faults` counts the
   * counts of a permits subject (stream info with a subject filter) to lose.
   */
  const replica = async (faults = { left: 0 }, log: Logger = silentLogger()): Promise<QueueControls> => {
    const { controls, stop } = await controlsReplicas.replica((handles: ControlsHandles) => {
      const streams = new Proxy(handles.jsm.streams, {
        get(st, k) {
          const v = Reflect.get(st, k, st);
          if (k !== "info" || typeof v !== "function") return typeof v === "function" ? v.bind(st) : v;
          return (name: string, opts?: { subjects_filter?: string }) => {
            if (opts?.subjects_filter && faults.left > 0) {
              faults.left--;
              return Promise.reject(lostRequest());
            }
            return v.call(st, name, opts);
          };
        },
      });
      const seenJsm = new Proxy(handles.jsm, {
        get: (m, k) => (k === "streams" ? streams : Reflect.get(m, k, m)),
      });
      return { ...handles, jsm: seenJsm };
    }, log);
    stopOf.set(controls, stop);
    return controls;
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
    const consumer = await controlsReplicas
      .jsm()
      .consumers.info(names.permitsStream, permitsConsumer(queue, "concurrency"));
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
