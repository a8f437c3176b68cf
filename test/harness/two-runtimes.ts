/**
 * Two runtimes on a nats-server of the test's own, and a raw client of the
 * test (its oracle): the setup of the tests that break a queue's permits
 * under two runtimes, made before the file's tests and stopped after.
 */
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll } from "vitest";
import type { RuntimeOptions } from "../../src/api/options.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { type NatsServerHandle, startNatsServer } from "./nats-server.ts";
import { natsPool, type RuntimePool } from "./runtime-pools.ts";

export interface TwoRuntimes {
  readonly server: NatsServerHandle;
  readonly a: Runtime;
  readonly b: Runtime;
  /** The test's own client, and its manager. */
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
}

/** Registers the file's setup and teardown; the fields are there once `beforeAll` has run. */
export const useTwoNatsRuntimes = (
  options: RuntimeOptions = { jobs: { cleanupIntervalMs: 0 } },
): TwoRuntimes => {
  const made: { -readonly [K in keyof TwoRuntimes]?: TwoRuntimes[K] } = {};
  let runtimes: RuntimePool | undefined;
  beforeAll(async () => {
    made.server = await startNatsServer();
    runtimes = natsPool(made.server.url, options);
    made.a = await runtimes.runtime("a");
    made.b = await runtimes.runtime("b");
    made.nc = await connect({ servers: made.server.url, name: "raw" });
    made.jsm = await jetstreamManager(made.nc);
  });
  afterAll(async () => {
    await made.nc?.close();
    await runtimes?.stop();
    await made.server?.dispose();
  });
  return made as TwoRuntimes;
};
