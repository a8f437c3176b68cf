import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";
import { type BrokerHarness, brokerContract } from "./broker.contract.ts";
import { delayedContract } from "./delayed.contract.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const retentionMs = 3600_000;

let server: NatsServerHandle;
beforeAll(async () => {
  server = await startNatsServer();
});
afterAll(async () => {
  await server?.dispose();
});

let cases = 0;

/**
 * The same contract on a real nats-server. Each case gets its own prefix,
 * hence its own streams, buckets and advisories: cases never see each other.
 * Time is real: `advance` waits (a poll against a deadline), and the suite's
 * assertions poll for the state they expect.
 */
const harness = async (): Promise<BrokerHarness> => {
  const prefix = `c${++cases}`;
  const core = await createRuntimeCore({ servers: server.url, logger, prefix });
  const broker = createNatsBroker(core, { retentionMs, holder: `${prefix}-a` });
  const peers: Broker[] = [];
  return {
    broker,
    prefix,
    ackWaitMs: 300,
    writeRawRecord: async (id, text) => {
      const nc = await connect({ servers: server.url, name: "raw-record" });
      try {
        await (await new Kvm(nc).open(brokerNames(prefix).jobsBucket)).put(id, text);
      } finally {
        await nc.close();
      }
    },
    advance: async (ms) => {
      const until = Date.now() + ms;
      await waitUntil(() => Date.now() >= until, {
        timeoutMs: ms + 1000,
        intervalMs: Math.max(1, Math.min(20, ms)),
        message: `${ms} ms to pass`,
      });
    },
    peer: async (holder) => {
      const peer = createNatsBroker(core, { retentionMs, holder });
      peers.push(peer);
      return peer;
    },
    dispose: async () => {
      for (const peer of peers) await peer.close();
      await broker.close();
      await core.stop();
    },
  };
};

brokerContract("nats", harness);
delayedContract("nats", harness);
