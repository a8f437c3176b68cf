/**
 * `jetstate-jobs doctor` with 50 queues (each with held tasks and limits),
 * run from a host a few milliseconds from the server (another zone, a
 * bastion, an operator's VPN): every call it makes waits out the round trip
 * in turn, ~1,700 of them (the permission probes, then per queue a lane read
 * and the dead-letters, due and pool consumers, each read paying a
 * `$JS.API.INFO` of its own besides). Each is an operation with its own
 * deadline (so that "many queues far from the server" hold), but the CLI
 * bounds the whole command at `--timeout` + 1 s: doctor exits 4, "no answer
 * from NATS within 11000 ms", on a healthy server that answered every call.
 * Operators page on it as they do on 5. The control: the same doctor run
 * next to the server exits 0; the far one is the same run through a proxy
 * that only delays bytes (4 ms each way).
 */
import net from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type BuiltCli, buildCli, runCli } from "../harness/cli.ts";
import { useServerConnection } from "../harness/server-connection.ts";

const held = useServerConnection();
let cli: BuiltCli;
let rt: Runtime;

/** A TCP proxy on loopback that passes every byte on, `oneWayMs` late, in order. */
const latencyProxy = async (target: string, oneWayMs: number) => {
  const { port } = new URL(target);
  const sockets = new Set<net.Socket>();
  const late = (from: net.Socket, to: net.Socket) =>
    from.on("data", (chunk) => setTimeout(() => to.destroyed || to.write(chunk), oneWayMs));
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), "127.0.0.1");
    sockets.add(client).add(upstream);
    late(client, upstream);
    late(upstream, client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    url: `nats://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
};

beforeAll(async () => {
  cli = await buildCli();
  rt = await createRuntime({ servers: held.server.url, logger: silentLogger() });
  // Every bucket made, so that doctor's only question is the queues'.
  await rt.admin.provision();
  for (let i = 0; i < 50; i++) {
    await rt.jobs.submit<number, number>({ queue: `q${i}`, tasks: [1], delayMs: 3_600_000 });
    await rt.queues.configure(`q${i}`, { maxConcurrency: 2, ratePerSecond: 10 });
  }
}, 120_000);
afterAll(async () => {
  await rt?.stop();
  await cli?.remove();
});

it("50 queues, doctor 8 ms (round trip) from the server: exit 0, as next to it", async () => {
  const near = await runCli(cli.bin, ["doctor"], { NATS_URL: held.server.url });
  expect(near.code, `${near.stdout}\n${near.stderr}`).toBe(0);

  const proxy = await latencyProxy(held.server.url, 4);
  try {
    const far = await runCli(cli.bin, ["doctor"], { NATS_URL: proxy.url }, 60_000);
    // Fails on the current code: exit 4 after ~11 s, "command: no answer from NATS within 11000 ms".
    expect(far.code, `after ${far.ms} ms:\n${far.stdout}\n${far.stderr}`).toBe(0);
  } finally {
    await proxy.close();
  }
}, 120_000);
