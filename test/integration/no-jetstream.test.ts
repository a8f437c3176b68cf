/**
 * A runtime on a nats-server started without JetStream: a submit fails at once
 * with a permanent error saying the server has no JetStream and what to do, not
 * a retried TransientBrokerError naming an internal step after ~1.6 s
 * ("dead-letters.setup: jetstream is not enabled"); the runtime's loops say it
 * once each, not every round, and no line says nats.js's message twice
 * ("…: no responders: '$JS.API.INFO': no responders: '$JS.API.INFO'"). The
 * oracles: the error's type and retry decision, the clock, and the log lines.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { PermanentBrokerError } from "../../src/kernel/errors.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

let server: NatsServerHandle;
let rt: Runtime;
const { lines, logger } = capturedLog("info");

beforeAll(async () => {
  server = await startNatsServer({ jetstream: false });
  rt = await createRuntime({ servers: server.url, logger });
});
afterAll(async () => {
  await rt?.stop();
  await server?.dispose();
});

it("a submit fails at once, permanently, saying the server has no JetStream; loops say so once", async () => {
  const started = Date.now();
  const error = await rt.jobs.submit({ queue: "bare", tasks: [1] }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(PermanentBrokerError);
  expect(error).toMatchObject({ retry: "permanent" });
  expect((error as Error).message).toMatch(/has no JetStream.*start nats-server with -js/);
  expect(Date.now() - started).toBeLessThan(1500);
  const worker = rt.workers.start({ queue: "bare", handler: () => 1 });
  // Several rounds of every loop (their pauses start at 200 ms, doubling).
  await new Promise((resolve) => setTimeout(resolve, 4000));
  await worker.stop();
  const told = lines.filter((l) => l.level >= 40);
  // The connection says it once, as an error.
  const said = told.filter((l) => l.level === 50 && /has no JetStream/.test(l.msg));
  expect(said).toHaveLength(1);
  for (const line of told) {
    const text = JSON.stringify(line);
    expect(text).not.toMatch(/no responders: '\$JS\.API\.INFO': no responders/);
    expect(text, text).not.toMatch(/jetstream is not enabled: jetstream is not enabled/);
  }
  // One warning per loop (and per reader) for the whole spell, not one per round.
  const perSource = new Map<string, number>();
  for (const line of told.filter((l) => l.level === 40)) {
    const source = `${String(line.actor)}/${String(line.loop ?? "")}/${line.msg}`;
    perSource.set(source, (perSource.get(source) ?? 0) + 1);
  }
  for (const [source, n] of perSource) expect(n, source).toBe(1);
}, 30_000);
