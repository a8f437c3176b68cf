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
import { afterAll, beforeAll, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type BuiltCli, buildCli, runCli } from "../harness/cli.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { latencyProxy } from "../harness/tcp-proxy.ts";

const held = useServerConnection();
let cli: BuiltCli;
let rt: Runtime;

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
