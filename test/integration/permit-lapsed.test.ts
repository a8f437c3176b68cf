/**
 * A concurrency permit whose lease ran out while its holder's connection
 * was away (the server restarted with its store kept, down for longer than
 * the permit's 5 s lease) goes to the next task waiting; the first holder's
 * give-back at its end must not free it. The server answers a nak by the
 * message's stream sequence alone: the nak freed the new holder's permit,
 * and a third task could run on a pool of one. The oracles: the pool's
 * consumer as the server counts it, and the naks seen on the permits' ack
 * subjects, both read by a client of the test's own.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { permitsConsumer } from "../../src/adapters/names.ts";
import type { NatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import type { Permit } from "../../src/adapters/queue-controls.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { type RestartableBroker, startRestartableBroker } from "../harness/restartable-broker.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

describe("a permit lost while its holder's connection was away", () => {
  let server: NatsServerHandle;
  let broker: NatsBroker;
  let started: RestartableBroker | undefined;
  beforeAll(async () => {
    started = await startRestartableBroker("lapsed", logger);
    ({ server, broker } = started);
  });
  afterAll(async () => {
    await started?.dispose();
  });

  it("is not given back by its first holder: the pool of one stays at one", async () => {
    const controls = broker.queueControls;
    const queue = "lapsed";
    await controls.setPermits(queue, "concurrency", 1);
    const stop = new AbortController();
    const take = (signal = stop.signal) => controls.takePermit(queue, "concurrency", signal);
    const first = (await take()) as Permit;
    expect(first).toBeDefined();
    // Away for longer than the lease: its keeps are due meanwhile and reach nobody.
    await server.stop();
    await new Promise((resolve) => setTimeout(resolve, 5500));
    first.keep();
    await server.restart();
    // Back: the server hands the lapsed permit to the next taker.
    const second = (await take()) as Permit;
    expect(second).toBeDefined();
    const spy = await connect({ servers: server.url });
    const naks: string[] = [];
    spy.subscribe("$JS.ACK.jetstate_permits.>", {
      callback: (_e, m) => {
        if (m.string().startsWith("-NAK")) naks.push(m.subject);
      },
    });
    await spy.flush();
    /** The pool as the server holds it, once what this runtime's client sent before is in. */
    const pool = async () => {
      // A request on the runtime's client: the server has what that client sent before its answer.
      await controls.getSettings(queue);
      await spy.flush();
      const jsm = await jetstreamManager(spy);
      const info = await jsm.consumers.info("jetstate_permits", permitsConsumer(queue, "concurrency"));
      return { held: info.num_ack_pending, free: info.num_pending };
    };
    try {
      // The first holder's task ends: its permit is the second's now.
      first.keep();
      first.release();
      expect(await pool()).toEqual({ held: 1, free: 0 });
      expect(naks).toEqual([]);
      // The second holder's own give-back goes out.
      second.release();
      await pool();
      expect(naks).toHaveLength(1);
    } finally {
      stop.abort();
      await spy.close();
    }
  }, 60_000);
});
