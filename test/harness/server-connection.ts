import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll } from "vitest";
import { type NatsServerHandle, startNatsServer } from "./nats-server.ts";

/**
 * A nats-server of the test file's own and one connection to it, for the
 * whole file: read `server` and `nc` from the returned object inside a test.
 * Closed after the file's own `afterAll` hooks (vitest runs them last-first).
 */
export const useServerConnection = (): { readonly server: NatsServerHandle; readonly nc: NatsConnection } => {
  const held = {} as { server: NatsServerHandle; nc: NatsConnection };
  beforeAll(async () => {
    held.server = await startNatsServer();
    held.nc = await connect({ servers: held.server.url });
  });
  afterAll(async () => {
    await held.nc?.close();
    await held.server?.dispose();
  });
  return held;
};
