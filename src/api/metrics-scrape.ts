import { Counter, Gauge, type Registry } from "prom-client";
import type { QueueStats } from "../adapters/broker-admin.ts";
import type { Logger } from "../kernel/logger.ts";
import type { WorkerInfo } from "../kernel/presence.ts";

/** What the gauges read at scrape time need: each read bounded by `timeoutMs`. */
export interface ScrapeSources {
  readQueues(): Promise<QueueStats[]>;
  listWorkers(): Promise<WorkerInfo[]>;
  /** The runtime's clock: the oldest task's age is `now()` minus when it was stored. */
  now(): number;
  readonly queues?: readonly string[];
  readonly timeoutMs: number;
  readonly log: Logger;
}

type Named = <M>(name: string, make: (name: string) => M) => M;

/** One queue read serves the scrape that asked (its two gauges), and any scrape in the next second. */
const queueReadReuseMs = 1000;

/** `read` within `ms`, or a rejection: a scrape must answer while the server is away. */
const within = <A>(read: () => Promise<A>, ms: number, what: string): Promise<A> => {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([read(), timeout]).finally(() => clearTimeout(timer));
};

/**
 * The gauges read when Prometheus scrapes: each queue's waiting tasks and
 * the age of the oldest (from the broker: `queueStats`), and the workers
 * alive per queue (`rt.workers.list()`, every process's). A read that fails
 * or passes `timeoutMs` leaves its gauges without series for that scrape and
 * counts in `jetstate_scrape_read_errors_total{read}`.
 */
export const registerScrapeGauges = (registry: Registry, named: Named, sources: ScrapeSources): void => {
  const registers = [registry];
  const { log } = sources;
  const errors = named(
    "jetstate_scrape_read_errors_total",
    (name) =>
      new Counter({
        name,
        help: "Scrapes whose read failed or passed scrapeTimeoutMs, by read (queues, workers): their gauges had no series then.",
        labelNames: ["read"],
        registers,
      }),
  );
  // One warning per spell of failures (a process without the permissions fails every scrape).
  const failing = { queues: false, workers: false };
  const failed = (read: "queues" | "workers") => (error: unknown) => {
    errors.inc({ read });
    (failing[read] ? log.debug : log.warn).call(log, { err: error, read }, "not read for this scrape");
    failing[read] = true;
    return undefined;
  };
  const succeeded =
    (read: "queues" | "workers") =>
    <A>(value: A): A => {
      failing[read] = false;
      return value;
    };

  let lastRead: { at: number; stats: Promise<QueueStats[] | undefined> } | undefined;
  const readQueues = (): Promise<QueueStats[] | undefined> => {
    const now = Date.now();
    if (lastRead && now - lastRead.at < queueReadReuseMs) return lastRead.stats;
    // The broker bounds its own read (NATS: the operation's deadline); this bounds the rest.
    const stats = within(sources.readQueues, sources.timeoutMs, "queue stats").then(
      succeeded("queues"),
      failed("queues"),
    );
    lastRead = { at: now, stats };
    return stats;
  };
  named(
    "jetstate_queue_waiting_tasks",
    (name) =>
      new Gauge({
        name,
        help: "Tasks stored and never delivered to a worker yet, by queue (read at scrape time).",
        labelNames: ["queue"],
        registers,
        async collect() {
          this.reset();
          for (const s of (await readQueues()) ?? []) this.set({ queue: s.queue }, s.waiting);
        },
      }),
  );
  named(
    "jetstate_queue_oldest_waiting_seconds",
    (name) =>
      new Gauge({
        name,
        help: "Age of the oldest task never delivered yet, by queue; 0 when none waits (read at scrape time).",
        labelNames: ["queue"],
        registers,
        async collect() {
          this.reset();
          const now = sources.now();
          for (const s of (await readQueues()) ?? [])
            this.set(
              { queue: s.queue },
              s.oldestWaitingAt === undefined ? 0 : Math.max(0, now - s.oldestWaitingAt) / 1000,
            );
        },
      }),
  );
  named(
    "jetstate_workers",
    (name) =>
      new Gauge({
        name,
        help: "Workers alive per queue, of every process (rt.workers.list(), read at scrape time); 0 for a known queue none serves.",
        labelNames: ["queue"],
        registers,
        async collect() {
          this.reset();
          const workers = await within(sources.listWorkers, sources.timeoutMs, "workers").then(
            succeeded("workers"),
            failed("workers"),
          );
          if (!workers) return;
          // Every queue known gets its series, 0 when no worker is alive on it: the number on call
          // looks for (the same read as the queue gauges, reused within the scrape).
          const queues = sources.queues ?? ((await readQueues()) ?? []).map((s) => s.queue);
          for (const queue of queues) this.set({ queue }, 0);
          for (const worker of workers) this.inc({ queue: worker.queue });
        },
      }),
  );
};
