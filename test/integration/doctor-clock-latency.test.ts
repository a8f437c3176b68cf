/**
 * Doctor's clock check (`rt.admin.diagnose().clock`) over a slow link: this
 * host and the server share one clock, and every byte takes 150 ms each way
 * (a proxy on loopback). The skew is the consumer's creation stamp minus the
 * middle of its create's round trip, so a right clock reads within half a
 * round trip of 0. Since `consumerStamp` took over the measure,
 * `measureClock` reads `sentAt` before `jetstreamManager(nc)`, whose account
 * info request is one more round trip before the create is even sent: the
 * server reads a whole round trip ahead of a host with the same clock
 * (~+300 ms with a 300 ms round trip here; past ~1 s each way doctor calls a
 * right clock a problem, "this host's clock is … behind the server's").
 * Fails on the current code: skewMs ≈ roundTripMs, the bound is half of it.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { latencyProxy } from "../harness/tcp-proxy.ts";

const oneWayMs = 150;

let server: NatsServerHandle;
let link: Awaited<ReturnType<typeof latencyProxy>>;
let rt: Runtime | undefined;

beforeAll(async () => {
  server = await startNatsServer();
  // The stores made over the direct link: only the diagnosis goes through the slow one.
  const direct = await createRuntime({ servers: server.url, roles: ["admin"], logger: silentLogger() });
  await direct.admin.provision(["q"]);
  await direct.stop();
  link = await latencyProxy(server.url, oneWayMs);
});
afterAll(async () => {
  await rt?.stop();
  await link?.close();
  await server?.dispose();
});

it("a host on the server's own clock reads within half a round trip of it over a slow link", async () => {
  rt = await createRuntime({
    servers: link.url,
    roles: ["admin"],
    logger: silentLogger(),
    connection: { operationTimeoutMs: 20_000 },
  });
  const { clock, problems } = await rt.admin.diagnose();
  expect("skewMs" in clock).toBe(true);
  if (!("skewMs" in clock)) return;
  // The round trip is what the link makes it (two delays, and the server's and the loop's time).
  expect(clock.roundTripMs).toBeGreaterThanOrEqual(2 * oneWayMs);
  // Same clock: the stamp falls within the create's round trip, so |skew| ≤ half of it (+ slack).
  expect(Math.abs(clock.skewMs)).toBeLessThanOrEqual(clock.roundTripMs / 2 + 100);
  expect(problems.filter((p) => p.what.includes("clock"))).toEqual([]);
}, 120_000);
