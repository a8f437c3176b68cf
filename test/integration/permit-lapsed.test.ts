/**
 * A concurrency permit whose lease ran out while its holder's connection
 * was away (cut by a TCP proxy between that client and the server, which
 * stays up) goes to the next task waiting, in another client. Once the
 * first holder is back, a keep of its that the server has after the
 * lease's end must not make the permit its own again, and its give-back at
 * its end must not free it. The server answers a nak by the message's
 * stream sequence alone: the nak freed the new holder's permit, and a
 * third task could run on a pool of one. Every step waits for what the
 * server or a client shows, never for a time: the holder away (its
 * connection's state), the lease run out (the server hands the permit to
 * the second client), the holder back. The oracles: the pool's consumer as
 * the server counts it, and the naks seen on the permits' ack subjects,
 * both read by a client of the test's own.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { permitsConsumer } from "../../src/adapters/names.ts";
import type { Permit } from "../../src/adapters/queue-controls.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { type ReconnectingBroker, reconnectingBroker } from "../harness/restartable-broker.ts";
import { tcpProxy } from "../harness/tcp-proxy.ts";
import { waitUntil, within } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

describe("a permit lost while its holder's connection was away", () => {
  let server: NatsServerHandle;
  let proxy: Awaited<ReturnType<typeof tcpProxy>>;
  /** The first holder, through the proxy. */
  let away: ReconnectingBroker;
  /** The next taker, on the server directly. */
  let next: ReconnectingBroker;
  beforeAll(async () => {
    server = await startNatsServer();
    proxy = await tcpProxy(server.url);
    away = await reconnectingBroker(proxy.url, "lapsed-first", logger);
    next = await reconnectingBroker(server.url, "lapsed-second", logger);
  });
  afterAll(async () => {
    await away?.close();
    await next?.close();
    await proxy?.close();
    await server?.dispose();
  });

  it("is not given back by its first holder: the pool of one stays at one", async () => {
    const queue = "lapsed";
    await away.broker.queueControls.setPermits(queue, "concurrency", 1);
    const stop = new AbortController();
    const take = (holder: ReconnectingBroker) =>
      holder.broker.queueControls.takePermit(queue, "concurrency", stop.signal);
    const spy = await connect({ servers: server.url });
    const naks: string[] = [];
    spy.subscribe("$JS.ACK.jetstate_permits.>", {
      callback: (_e, m) => {
        if (m.string().startsWith("-NAK")) naks.push(m.subject);
      },
    });
    await spy.flush();
    /** The pool as the server holds it, once what `holder`'s client sent before is in. */
    const pool = async (holder: ReconnectingBroker) => {
      // A request on the holder's client: the server has what that client sent before its answer.
      await holder.broker.queueControls.getSettings(queue);
      await spy.flush();
      const jsm = await jetstreamManager(spy);
      const info = await jsm.consumers.info("jetstate_permits", permitsConsumer(queue, "concurrency"));
      return { held: info.num_ack_pending, free: info.num_pending, handedOn: info.num_redelivered };
    };
    try {
      const first = (await take(away)) as Permit;
      expect(first).toBeDefined();
      proxy.cut();
      await waitUntil(() => away.connection.state !== "connected", {
        timeoutMs: 5000,
        message: () => `the first holder's client sees its connection lost (${away.connection.state})`,
      });
      // A keep falls due while away: it reaches the server only once the client is back.
      first.keep();
      // The server hands the permit on only once its lease (5 s) ran out with no keep heard: while
      // the first holder is still away (the proxy refuses it until `restore`).
      const taken = await within(take(next), 15_000);
      if (taken === "never" || taken === undefined) throw new Error("the permit not handed on within 15 s");
      const second = taken;
      expect(await pool(next)).toEqual({ held: 1, free: 0, handedOn: 1 });
      proxy.restore();
      await waitUntil(() => away.connection.state === "connected", {
        timeoutMs: 10_000,
        message: () => `the first holder's client back (${away.connection.state})`,
      });
      // Back, the first holder keeps on, and the server has that keep before its task ends (the
      // keep's flush comes back before the answer to a request sent after it): a keep heard
      // after its lease's end must not make the permit its own again.
      first.keep();
      await away.broker.queueControls.getSettings(queue);
      // The first holder's task ends: its permit is the second's now.
      first.release();
      // A nak'd delivery stays counted held on nats-server 2.9 until it is delivered again: the
      // naks seen are what show a give-back.
      expect(await pool(away)).toEqual({ held: 1, free: 0, handedOn: 1 });
      expect(naks).toEqual([]);
      // The second holder's own give-back goes out.
      second.release();
      await pool(next);
      expect(naks).toHaveLength(1);
    } finally {
      stop.abort();
      await spy.close();
    }
  }, 60_000);
});
