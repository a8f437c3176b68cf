/**
 * `leases.readServerTime()` when the server answers its first read with a
 * transient failure (JetStream "temporarily unavailable", 503: a leader
 * election, a server restarting). Before the shared read (75f57b5) the read
 * ran as an operation of its own through the runtime's retry policy: the
 * failure was retried within the deadline and the caller got a reading.
 * The shared read (`#readOnce`) now catches and logs the failure inside the
 * operation, so the operation "succeeds" and is never retried: the caller
 * (observeJob, a flow's cancel, a submit waiting on another's live submit)
 * gets no reading, and judges another's lease as written, on its own clock
 * (a runtime 20 s ahead reads a live lease as run out: 74b33b0).
 * Oracle: the reading returned, and the creates of `clock_` consumers made.
 * Fails on the current code: undefined after one create; passes on 75f57b5~1.
 */
import { JetStreamApiError, type JetStreamManager } from "@nats-io/jetstream";
import { afterEach, expect, it } from "vitest";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { useServerConnection } from "../harness/server-connection.ts";

const served = useServerConnection();
let core: Awaited<ReturnType<typeof createRuntimeCore>> | undefined;

afterEach(async () => {
  await core?.stop();
  core = undefined;
});

it("a transient failure of the server clock's read is retried, and the caller gets a reading", async () => {
  core = await createRuntimeCore({
    servers: served.server.url,
    prefix: "clockretry",
    name: "r",
    logger: silentLogger(),
  });
  const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "r" });
  // The first create of a clock consumer answered 503 (as the server does with no leader yet).
  const creates: string[] = [];
  const real = broker.jetstream.handles.bind(broker.jetstream);
  broker.jetstream.handles = async (nc) => {
    const handles = await real(nc);
    const jsm: JetStreamManager = handles.jsm;
    const add = jsm.consumers.add.bind(jsm.consumers);
    jsm.consumers.add = async (stream, config) => {
      if (config?.name?.startsWith("clock_")) {
        creates.push(config.name);
        if (creates.length === 1)
          throw new JetStreamApiError({
            code: 503,
            err_code: 10008,
            description: "JetStream system temporarily unavailable",
          });
      }
      return add(stream, config);
    };
    return handles;
  };
  const seen = await broker.leases.readServerTime();
  expect(creates.length).toBeGreaterThanOrEqual(2);
  expect(seen).toBeDefined();
}, 30_000);
