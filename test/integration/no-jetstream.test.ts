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
import { capturedLog, type LogLine } from "../harness/log-lines.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

/** The loops that restart on a failure, and the scheduler's read of its schedules, by actor, loop and message. */
const restarting = [
  "runtime/job-record-changes/loop failed",
  "runtime/results-feed:bare/loop failed",
  "runtime/queue-settings:bare/loop failed",
  "scheduler//schedules not read",
];

/** Who said a line, and what: its actor, its loop (if any) and its message. */
const sourceOf = (line: LogLine): string => `${String(line.actor)}/${String(line.loop ?? "")}/${line.msg}`;

let server: NatsServerHandle;
let rt: Runtime;
// At debug: a loop's repeated failures are said there, and they count its rounds.
const { lines, logger } = capturedLog("debug");

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
  // Several rounds of every loop that restarts, as its log counts them: each round's failure is
  // said, as a warning or at debug (their pauses start at 200 ms, doubling).
  const rounds = (source: string) =>
    lines.filter((l) => l.err !== undefined && sourceOf(l).startsWith(source)).length;
  await waitUntil(() => restarting.every((source) => rounds(source) >= 3), {
    timeoutMs: 20_000,
    message: () => restarting.map((source) => `${source}: ${rounds(source)} rounds`).join(", "),
  });
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
    const source = sourceOf(line);
    perSource.set(source, (perSource.get(source) ?? 0) + 1);
  }
  for (const [source, n] of perSource) expect(n, source).toBe(1);
}, 30_000);
