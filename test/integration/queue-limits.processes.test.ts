/**
 * Queue limits and pause across 3 worker processes on one nats-server
 * (issue #19, items 4 and 5). The oracle is the ledger the handlers print
 * (test/fixtures/queue-worker.ts): every start and end with its time, on
 * every process; the test computes the overlap of handler intervals, the
 * starts in every 1-second window and the starts after a pause from it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type Child, type Line, startChild } from "../harness/child-processes.ts";
import { mostStartsPerSecond } from "../harness/intervals.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const queues = ["capped", "rated", "pausable", "blocking"];

let nats: NatsServerHandle;
let admin: Runtime;
let children: Child[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  admin = await createRuntime({ servers: nats.url, name: "queue-admin", logger: silentLogger() });
  // The queues' streams before the workers look for them.
  await admin.admin.provision(queues);
  children = [0, 1, 2].map((i) =>
    startChild(`queue-worker-${i}`, process.cwd(), "test/fixtures/queue-worker.ts", [
      nats.url,
      queues.join(","),
      "4",
    ]),
  );
  await Promise.all(children.map((c) => c.waitFor((l) => l.event === "ready", "worker ready", 20_000)));
}, 40_000);

afterAll(async () => {
  for (const child of children) child.send("stop");
  await Promise.all(children.map((c) => Promise.race([c.exited, delay(5000)])));
  await Promise.all(children.map((c) => c.kill("SIGKILL")));
  await admin?.stop();
  await nats?.dispose();
});

interface Entry {
  readonly event: "start" | "end";
  readonly queue: string;
  readonly index: number;
  readonly at: number;
  readonly pid: number;
}

/** The ledger lines of `queue` from every process. */
const ledger = (queue: string): Entry[] =>
  children.flatMap((c) =>
    c.lines
      .filter((l: Line) => l.queue === queue && (l.event === "start" || l.event === "end"))
      .map((l) => ({ ...(l as unknown as Entry), pid: c.pid })),
  );

/** Most handlers running at once, across every process. */
const maxOverlap = (entries: readonly Entry[]): number => {
  const edges = [...entries].sort((a, b) => a.at - b.at || (a.event === "end" ? -1 : 1));
  let open = 0;
  let most = 0;
  for (const e of edges) {
    open += e.event === "start" ? 1 : -1;
    most = Math.max(most, open);
  }
  return most;
};

/** Most starts in any window [t, t + 1000 ms). */
const maxStartsPerSecond = (entries: readonly Entry[]): number =>
  mostStartsPerSecond(entries.filter((e) => e.event === "start").map((e) => e.at));

const indexesOf = (entries: readonly Entry[]) =>
  entries
    .filter((e) => e.event === "start")
    .map((e) => e.index)
    .sort((a, b) => a - b);

describe("queue limits across 3 worker processes (NATS)", () => {
  it("maxConcurrency 5: never more than 5 handlers at once across the processes", async () => {
    await admin.queues.configure("capped", { maxConcurrency: 5 });
    const job = await admin.jobs.submit({
      queue: "capped",
      tasks: Array.from({ length: 60 }, () => ({ ms: 60 })),
    });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 60, failed: 0 });
    const entries = ledger("capped");
    expect(indexesOf(entries)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    expect(new Set(entries.map((e) => e.pid)).size).toBeGreaterThan(1);
    // 12 slots in all: without the cap more than 5 would run.
    expect(maxOverlap(entries)).toBe(5);
  }, 30_000);

  it("ratePerSecond 20: no 1-second window holds more than 20 starts", async () => {
    await admin.queues.configure("rated", { ratePerSecond: 20 });
    const job = await admin.jobs.submit({ queue: "rated", tasks: Array.from({ length: 70 }, () => ({})) });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 70, failed: 0 });
    const entries = ledger("rated");
    expect(indexesOf(entries)).toEqual(Array.from({ length: 70 }, (_, i) => i));
    expect(maxStartsPerSecond(entries)).toBeLessThanOrEqual(20);
    const starts = entries.filter((e) => e.event === "start").map((e) => e.at);
    // 70 at 20 per second: the last starts at least 3 s after the first.
    expect(Math.max(...starts) - Math.min(...starts)).toBeGreaterThanOrEqual(3000);
  }, 30_000);

  it("pause: no start on any process 1 s after pause() returned, until resume; every task once", async () => {
    const total = 600;
    const job = await admin.jobs.submit({
      queue: "pausable",
      tasks: Array.from({ length: total }, () => ({ ms: 20 })),
    });
    await waitUntil(() => indexesOf(ledger("pausable")).length >= 30, {
      timeoutMs: 15_000,
      message: "tasks running",
    });
    await admin.queues.pause("pausable");
    // On the children's clock (test/fixtures/queue-worker.ts): the host's monotonic one.
    const pausedAt = Number(process.hrtime.bigint()) / 1e6;
    // The paused window itself: no start may fall in it (past the first second the pause has to spread).
    await delay(2500);
    const resumedAt = Number(process.hrtime.bigint()) / 1e6;
    await admin.queues.resume("pausable");
    const late = ledger("pausable").filter(
      (e) => e.event === "start" && e.at > pausedAt + 1000 && e.at < resumedAt,
    );
    expect(late).toEqual([]);
    expect(indexesOf(ledger("pausable")).length).toBeLessThan(total);
    expect(await job.done()).toMatchObject({ status: "succeeded", done: total, failed: 0, dead: 0 });
    // Every index exactly once: nothing lost, nothing run twice.
    expect(indexesOf(ledger("pausable"))).toEqual(Array.from({ length: total }, (_, i) => i));
  }, 30_000);

  it("permitLeaseMs: a handler holding its process's event loop past the default lease keeps its permit", async () => {
    // 7 s without a keep: the default 5 s lease would hand the permit to a task waiting in another
    // process, and two handlers would run at once (seen with the lease left out: 2).
    // The pool first made with the default lease, then the lease changed: its consumer's ack wait too.
    await admin.queues.configure("blocking", { maxConcurrency: 1 });
    await admin.queues.configure("blocking", { permitLeaseMs: 20_000 });
    const held = await admin.jobs.submit({ queue: "blocking", tasks: [{ blockMs: 7000 }] });
    await waitUntil(() => ledger("blocking").some((e) => e.event === "start"), {
      timeoutMs: 10_000,
      message: "the blocking task started",
    });
    // Pulled by the other two processes (the holder's loop is held): they wait for the permit.
    const waiting = await admin.jobs.submit({
      queue: "blocking",
      tasks: Array.from({ length: 4 }, () => ({})),
    });
    expect(await held.done()).toMatchObject({ status: "succeeded", done: 1 });
    expect(await waiting.done()).toMatchObject({ status: "succeeded", done: 4 });
    const entries = ledger("blocking");
    expect(new Set(entries.map((e) => e.pid)).size).toBeGreaterThan(1);
    expect(maxOverlap(entries)).toBe(1);
  }, 40_000);

  it("a concurrency permit is kept while its handler runs past the lease, and comes back after its holder is killed", async () => {
    await admin.queues.configure("crashq", { maxConcurrency: 1 });
    const holder = startChild("queue-worker-crash", process.cwd(), "test/fixtures/queue-worker.ts", [
      nats.url,
      "crashq",
      "1",
    ]);
    children.push(holder);
    await holder.waitFor((l) => l.event === "ready", "crash worker ready", 20_000);
    const long = await admin.jobs.submit({ queue: "crashq", tasks: [{ ms: 120_000 }], ackWaitMs: 60_000 });
    await holder.waitFor((l) => l.event === "start" && l.queue === "crashq", "the long task started", 10_000);
    // A second worker, in this process, with a job of its own: it must wait for the one permit.
    const starts: number[] = [];
    const worker = admin.workers.start({
      queue: "crashq",
      concurrency: 2,
      handler: () => {
        starts.push(Date.now());
        return "ok";
      },
    });
    // A short ack wait: if the holder's worker pulls this task (its one slot busy), it comes back soon.
    const quick = await admin.jobs.submit({ queue: "crashq", tasks: [{}], ackWaitMs: 1000 });
    // Longer than the permit's 5 s lease: the holder keeps it (working()), so nothing starts here.
    await delay(6500);
    expect(starts).toEqual([]);
    await holder.kill("SIGKILL");
    const killedAt = Date.now();
    expect(await quick.done()).toMatchObject({ status: "succeeded", done: 1 });
    // Back after the lease ran out: not before the kill, within the 5 s lease and a pull or two.
    expect(starts[0]).toBeGreaterThanOrEqual(killedAt);
    expect((starts[0] as number) - killedAt).toBeLessThan(8000);
    // It waited for the permit 5+ s with a 1 s ack wait, holding its lease: run once, not redelivered.
    // Longer than its 1 s ack wait: a redelivery would start it a second time in this window.
    await delay(1500);
    expect(starts).toHaveLength(1);
    await long.cancel("test over");
    await worker.stop();
  }, 40_000);
});
