/**
 * A lease that goes is removed by its sequence (`$JS.API.STREAM.MSG.DELETE`)
 * while its client is on the server that stored it (not in a cluster): a
 * filtered purge costs that server ~100 µs more of CPU, a third of a lane
 * job's. A sequence says nothing of its key, so a lease written before the
 * server came back with an empty store must go by its key: by then its
 * sequence is another key's. The oracle: the bucket's stream read raw.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { startNatsCluster } from "../harness/nats-cluster.ts";
import { storedCount, untilJetStreamAnswers } from "../harness/raw-results.ts";
import {
  type RestartableBroker,
  reconnectingBroker,
  startRestartableBroker,
} from "../harness/restartable-broker.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

describe("a lease's release by its sequence", () => {
  let started: RestartableBroker;
  let oracle: NatsConnection;
  const bucket = brokerNames("jetstate").leasesBucket;
  const stream = `KV_${bucket}`;
  beforeAll(async () => {
    started = await startRestartableBroker("holder", logger);
    oracle = await connect({ servers: started.server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  });
  afterAll(async () => {
    await oracle?.close();
    await started?.dispose();
  });

  /** The removals (purges, deletes by sequence) the oracle sees asked of the leases' stream while `act` runs. */
  const removalsDuring = async (act: () => Promise<void>): Promise<string[]> => {
    const seen: string[] = [];
    const callback = (_e: unknown, m: { subject: string }) => {
      seen.push(m.subject);
    };
    const subs = [`$JS.API.STREAM.PURGE.${stream}`, `$JS.API.STREAM.MSG.DELETE.${stream}`].map((subject) =>
      oracle.subscribe(subject, { callback }),
    );
    await oracle.flush();
    await act();
    await oracle.flush();
    for (const sub of subs) sub.unsubscribe();
    return seen;
  };

  it("on the server that stored it: by its sequence, no filtered purge, and the key is gone", async () => {
    const { broker } = started;
    expect(await broker.leases.acquire("jone", 60_000)).toBe(true);
    const jsm = await jetstreamManager(oracle);
    expect(await storedCount(jsm, stream, `$KV.${bucket}.jone`)).toBe(1);
    // Until the key is gone as read raw: a release that failed under load would be owed, paid
    // by a later heartbeat, and seen here as what it then asks.
    const asked = await removalsDuring(async () => {
      await broker.leases.release("jone");
      await waitUntil(async () => (await storedCount(jsm, stream, `$KV.${bucket}.jone`)) === 0, {
        timeoutMs: 10_000,
        message: "the lease gone",
      });
    });
    expect(asked).toEqual([`$JS.API.STREAM.MSG.DELETE.${stream}`]);
  });

  it("written before the server came back empty: by its key, and the key now at its sequence stays", async () => {
    const { broker, server } = started;
    expect(await broker.leases.acquire("jbefore", 60_000)).toBe(true);
    const jsm = await jetstreamManager(oracle);
    const before = await jsm.streams.getMessage(stream, { last_by_subj: `$KV.${bucket}.jbefore` });
    const revision = before?.seq ?? 0;
    expect(revision).toBeGreaterThan(1);

    await server.restartEmpty();
    await waitUntil(() => started.connection.state === "connected", {
      timeoutMs: 15_000,
      message: "the broker's client back on the server",
    });
    await untilJetStreamAnswers(oracle);
    // The bucket made again by another runtime, and its keys written up to the old sequence.
    const kv = await new Kvm(oracle).create(bucket, { history: 1 });
    for (let n = 1; n <= revision; n++) await kv.put(`other${n}`, "{}");
    const atOld = await (await jetstreamManager(oracle)).streams.getMessage(stream, { seq: revision });
    expect(atOld?.subject).toBe(`$KV.${bucket}.other${revision}`);

    const asked = await removalsDuring(() => broker.leases.release("jbefore"));
    for (let n = 1; n <= revision; n++)
      expect((await kv.get(`other${n}`))?.operation, `other${n}`).toBe("PUT");
    expect(asked).toEqual([`$JS.API.STREAM.PURGE.${stream}`]);
  });

  it("on a cluster: by its key, never by its sequence", async () => {
    const cluster = await startNatsCluster();
    const client = await reconnectingBroker(cluster.urls.join(","), "holder", logger);
    const clusterOracle = await connect({ servers: cluster.urls });
    try {
      expect(await client.broker.leases.acquire("jclustered", 60_000)).toBe(true);
      const seen: string[] = [];
      const subs = [`$JS.API.STREAM.PURGE.${stream}`, `$JS.API.STREAM.MSG.DELETE.${stream}`].map((subject) =>
        clusterOracle.subscribe(subject, { callback: (_e, m) => void seen.push(m.subject) }),
      );
      await clusterOracle.flush();
      await client.broker.leases.release("jclustered");
      await clusterOracle.flush();
      for (const sub of subs) sub.unsubscribe();
      expect(seen).toEqual([`$JS.API.STREAM.PURGE.${stream}`]);
      const jsm = await jetstreamManager(clusterOracle);
      expect(await storedCount(jsm, stream, `$KV.${bucket}.jclustered`)).toBe(0);
    } finally {
      await clusterOracle.close();
      await client.close();
      await cluster.dispose();
    }
  }, 90_000);
});
