/**
 * Cleanup and the results feeds on a real nats-server. nats-server 2.9.10
 * moves every consumer whose filter covers a purged subject past the
 * stream's last message (server/stream.go `purge` → consumer.go `purge`):
 * a queue's results feed (`<prefix>.results.<queue>.>`) that had not read
 * everything stored yet would skip it for good. The oracles are the
 * handlers' ledger and the results the server holds, read raw.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsRawResults, storedCount } from "../harness/raw-results.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * A TCP relay to the server whose traffic, both ways, can be held and then
 * let go in order: a client behind it neither sends nor receives meanwhile
 * (a slow network, a busy process), so a pull consumer of its gets no more
 * than the pulls it had asked for before.
 */
const startRelay = async (serverPort: number) => {
  let held = false;
  const queued: Array<[Socket, Buffer]> = [];
  const sockets = new Set<Socket>();
  const forward = (from: Socket, to: Socket) => {
    from.on("data", (chunk: Buffer) => {
      if (held) queued.push([to, chunk]);
      else to.write(chunk);
    });
    from.on("close", () => to.destroy());
    from.on("error", () => to.destroy());
  };
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(serverPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    }
    forward(client, upstream);
    forward(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `nats://127.0.0.1:${(server.address() as { port: number }).port}`,
    hold: () => {
      held = true;
    },
    release: () => {
      held = false;
      for (const [to, chunk] of queued.splice(0)) to.write(chunk);
    },
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
};

/** A gate handlers wait behind until `open()`. */
const gate = () => {
  let open: () => void = () => undefined;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open: () => open() };
};

describe("cleanup never makes a queue's results feed skip what it had not read yet", () => {
  let server: NatsServerHandle;
  let relay: Awaited<ReturnType<typeof startRelay>>;
  let raw: NatsConnection;
  let supervisor: Runtime;
  let workers: Runtime;
  const gates: Array<() => void> = [];
  beforeAll(async () => {
    server = await startNatsServer();
    relay = await startRelay(server.port);
    raw = await connect({ servers: server.url, name: "raw" });
    // The job's supervisor (and its queue's feed) reaches the server through the relay; the
    // workers and the cleanup do not.
    supervisor = await createRuntime({ servers: relay.url, logger, jobs: { cleanupIntervalMs: 0 } });
    workers = await createRuntime({ servers: server.url, logger, jobs: { cleanupIntervalMs: 0 } });
  });
  afterAll(async () => {
    for (const open of gates) open();
    relay?.release();
    await workers?.stop();
    await supervisor?.stop();
    await relay?.close();
    await raw?.close();
    await server?.dispose();
  });

  it("results of a running job stored behind an orphan's, then a cleanup: the job still counts every answer", async () => {
    const queue = "orphaned";
    const n = 5;
    const wait = gate();
    gates.push(wait.open);
    const started = new Set<number>();
    const answered: number[] = []; // the handlers' ledger
    const worker = workers.workers.start<number, number>({
      queue,
      concurrency: n,
      handler: async (task) => {
        started.add(task.index);
        if (task.index > 0) await wait.opened;
        answered.push(task.index);
        return task.payload;
      },
    });
    const job = await supervisor.jobs.submit({ queue, tasks: range(n) });
    // Its first answer came through the queue's feed: the job's reader is live on it.
    await waitUntil(() => job.snapshot().done === 1 && started.size === n, {
      timeoutMs: 10_000,
      message: "first answer counted, every task in a handler",
    });

    // The supervisor's connection is held: its feed reads no further than the pulls it had
    // asked for (256 messages at most). An orphan (results, no record: a crashed run's) stores
    // more than that, then the job's other answers are stored behind them.
    const jsm = await jetstreamManager(raw);
    relay.hold();
    const orphan = names.resultsSubject(queue, "jorphan");
    for (let i = 0; i < 300; i++) raw.publish(orphan, "[]");
    await raw.flush();
    wait.open();
    await waitUntil(async () => (await natsRawResults(raw, queue, job.id)).length === n, {
      timeoutMs: 10_000,
      message: "every answer stored",
    });
    const report = await workers.admin.cleanup();
    relay.release();
    // The orphan's results are still removed, one message at a time.
    expect(report.resultsPurged).toEqual([orphan]);
    expect(await storedCount(jsm, names.resultsStream, orphan)).toBe(0);

    const final = await Promise.race([job.done(), delay(8000).then(() => job.snapshot())]);
    await worker.stop();
    expect([...answered].sort()).toEqual(range(n));
    expect((await natsRawResults(raw, queue, job.id)).map((r) => r.i).sort()).toEqual(range(n));
    expect(final).toMatchObject({ status: "succeeded", done: n, failed: 0, dead: 0 });
  }, 30_000);
});
