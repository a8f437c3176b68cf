/**
 * Runtimes that start at once on a server that has none of jetstate's
 * buckets yet each make them: every one of them must end up with the bucket
 * (the one that won), as with streams. The server answers a create that
 * lost the race "subjects overlap with an existing stream" (seen in CI, in
 * the dashboard's test: a runtime's setup failed with a PermanentBrokerError).
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import { ensureBucket, Replicas } from "../../src/adapters/nats/streams.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { startNatsServer } from "../harness/nats-server.ts";

it("eight creates of one bucket at once, with other settings, over four connections: each opens the bucket", async () => {
  const server = await startNatsServer();
  const connections = await Promise.all([1, 2, 3, 4].map(() => connect({ servers: server.url })));
  try {
    for (let round = 0; round < 10; round++) {
      const bucket = `race_${round}`;
      const made = await Promise.allSettled(
        // Runtimes may ask with other settings (a bucket's age follows their retention).
        [...connections, ...connections].map(async (nc, n) =>
          ensureBucket(
            nc,
            await jetstreamManager(nc),
            bucket,
            { history: 1, ttl: 60_000 * (1 + n) },
            new Replicas(1, silentLogger()),
          ),
        ),
      );
      expect(
        made.filter((m) => m.status === "rejected").map((m) => String((m as PromiseRejectedResult).reason)),
      ).toEqual([]);
    }
  } finally {
    for (const nc of connections) await nc.close();
    await server.dispose();
  }
});
