import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { startNatsCluster } from "./nats-cluster.ts";

describe("startNatsCluster", () => {
  it("3 nodes with a meta leader; an R3 stream takes writes while a node is killed, which catches up when back", async () => {
    const cluster = await startNatsCluster();
    try {
      expect(cluster.nodes.map((n) => n.name)).toEqual(["n1", "n2", "n3"]);
      expect(new Set(cluster.urls).size).toBe(3);
      expect(cluster.nodes.map((n) => n.name)).toContain(await cluster.metaLeader());

      const nc = await connect({ servers: cluster.urls, name: "cluster-harness", reconnectTimeWait: 100 });
      try {
        const jsm = await jetstreamManager(nc);
        await jsm.streams.add({ name: "R3", subjects: ["r3.>"], storage: StorageType.File, num_replicas: 3 });
        const js = jetstream(nc);
        await js.publish("r3.a", "before");
        const leader = await cluster.streamLeader("R3");
        expect(cluster.nodes.map((n) => n.name)).toContain(leader);

        // A follower goes (the leader's kill, with its election, is a chaos scenario), and not
        // the node this client talks to (its reconnect is not what this checks): the stream
        // keeps taking writes on the other two, and the node catches up when back.
        const connectedTo = nc.info?.server_name;
        const killed = cluster.nodes.find((n) => n.name !== leader && n.name !== connectedTo);
        if (killed === undefined) throw new Error("no follower of R3 apart from the client's node");
        await killed.kill();
        expect(killed.running).toBe(false);
        // Generous: on two busy cores a write to the remaining two can take a while.
        await js.publish("r3.b", "during", { timeout: 15_000 });
        await killed.restart();
        await killed.waitHealthy();
        expect(killed.running).toBe(true);
        expect((await jsm.streams.info("R3")).state.messages).toBe(2);
        expect(await cluster.nodeServing("cluster-harness")).toBeDefined();
      } finally {
        await nc.close();
      }
    } finally {
      await cluster.dispose();
    }
  });
});
