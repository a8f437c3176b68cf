import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { InvalidArgument } from "../kernel/errors.ts";
import { childLogger } from "../kernel/logger.ts";
import { check, rejectUnknownKeys, SubjectToken } from "../kernel/validation.ts";
import type { ConnectionState } from "../machines/connection.machine.ts";
import { JobsMetrics } from "./metrics-jobs.ts";
import { registerScrapeGauges } from "./metrics-scrape.ts";
import { partsOf, type Runtime } from "./runtime.ts";

export interface MetricsOptions {
  /**
   * A prom-client registry to register jetstate's metrics into (one holding
   * your own metrics, or prom-client's default `register`).
   * @defaultValue a new Registry
   */
  readonly registry?: Registry;
  /**
   * Queues whose waiting tasks are read at each scrape (and reported with 0
   * workers when none is alive).
   * @defaultValue every queue the broker holds (a tasks stream on NATS)
   */
  readonly queues?: readonly string[];
  /**
   * Deadline of the queue read at each scrape: past it, the scrape goes on
   * without the queue series (or the workers') and `jetstate_scrape_read_errors_total` counts it.
   * @defaultValue 5000
   */
  readonly scrapeTimeoutMs?: number;
}

export interface Metrics {
  /** The registry the metrics are registered in: the one given, or a new one. */
  readonly registry: Registry;
  /** The exposition text (Prometheus format), read now. */
  metrics(): Promise<string>;
  /** The Fetch-API handler: `GET /metrics` answers the exposition; mount it in any server. */
  fetch(request: Request): Promise<Response>;
  /** Stops listening and removes jetstate's metrics from the registry. */
  stop(): Promise<void>;
}

const optionKeys = ["registry", "queues", "scrapeTimeoutMs"] as const;
const connectionStates: readonly ConnectionState[] = [
  "idle",
  "connecting",
  "connected",
  "reconnecting",
  "resetting",
  "backoff",
  "draining",
  "closed",
];

const checkOptions = (
  options: unknown,
): Required<Omit<MetricsOptions, "registry" | "queues">> & MetricsOptions => {
  if (typeof options !== "object" || options === null)
    throw new InvalidArgument({ message: "options: must be an object", field: "options" });
  rejectUnknownKeys(options, optionKeys, "");
  const { registry, queues, scrapeTimeoutMs } = options as Record<string, unknown>;
  if (registry !== undefined && !(registry instanceof Registry))
    throw new InvalidArgument({ message: "registry: must be a prom-client Registry", field: "registry" });
  if (queues !== undefined && !Array.isArray(queues))
    throw new InvalidArgument({ message: "queues: must be a list of queue names", field: "queues" });
  const timeout = scrapeTimeoutMs ?? 5000;
  if (typeof timeout !== "number" || !Number.isInteger(timeout) || timeout < 100 || timeout > 60_000)
    throw new InvalidArgument({
      message: "scrapeTimeoutMs: must be an integer between 100 and 60000",
      field: "scrapeTimeoutMs",
    });
  return {
    ...(registry === undefined ? {} : { registry }),
    ...(queues === undefined ? {} : { queues: queues.map((q, i) => check(SubjectToken, q, `queues[${i}]`)) }),
    scrapeTimeoutMs: timeout,
  };
};

/**
 * Prometheus metrics of a runtime (docs/operations.md lists them): jobs by
 * status, this process's workers' tasks (done, failed, dead, redelivered,
 * duration), each queue's waiting tasks and the age of the oldest (read at
 * scrape time, bounded by `scrapeTimeoutMs`), the connection's state and
 * reconnects, stalls. Throws `InvalidArgument` for bad options.
 *
 * @example
 * const metrics = createMetrics(rt);
 * serve({ fetch: metrics.fetch, port: 9464 }); // @hono/node-server, or any Fetch-API server
 */
export const createMetrics = (rt: Runtime, options: MetricsOptions = {}): Metrics => {
  const { core, broker } = partsOf(rt);
  const settings = checkOptions(options);
  const registry = settings.registry ?? new Registry();
  // prom-client would throw a plain Error on the first name taken, after nothing else was registered.
  if (registry.getSingleMetric("jetstate_tasks_done_total"))
    throw new InvalidArgument({
      message: "registry: already holds jetstate's metrics (stop() the metrics registered there first)",
      field: "registry",
    });
  const log = childLogger(core.logger, { actor: "metrics" });
  const registers = [registry];
  const names: string[] = [];
  const named = <M>(name: string, make: (name: string) => M): M => {
    names.push(name);
    return make(name);
  };

  const done = named(
    "jetstate_tasks_done_total",
    (name) =>
      new Counter({
        name,
        help: "Tasks this process's workers answered with a result (stored, then acked), by queue.",
        labelNames: ["queue"],
        registers,
      }),
  );
  const failed = named(
    "jetstate_tasks_failed_total",
    (name) =>
      new Counter({
        name,
        help: "Tasks this process's workers failed for good (a permanent error; stored, then termed), by queue.",
        labelNames: ["queue"],
        registers,
      }),
  );
  const dead = named(
    "jetstate_tasks_dead_total",
    (name) =>
      new Counter({
        name,
        help: "Tasks this process's workers answered dead (failed on their last delivery), by queue.",
        labelNames: ["queue"],
        registers,
      }),
  );
  const redelivered = named(
    "jetstate_task_redeliveries_total",
    (name) =>
      new Counter({
        name,
        help: "Handler runs of this process's workers on a delivery after the first (attempt > 1), by queue.",
        labelNames: ["queue"],
        registers,
      }),
  );
  const duration = named(
    "jetstate_task_duration_seconds",
    (name) =>
      new Histogram({
        name,
        help: "How long each handler run of this process's workers took, success or failure, by queue.",
        labelNames: ["queue"],
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900],
        registers,
      }),
  );
  const unlisten = core.telemetry.listen((event) => {
    if (event.type === "task.ran") duration.observe({ queue: event.queue }, event.seconds);
    else if (event.type === "task.redelivered") redelivered.inc({ queue: event.queue });
    else
      (event.outcome === "done" ? done : event.outcome === "dead" ? dead : failed).inc({
        queue: event.queue,
      });
  });

  registerScrapeGauges(registry, named, {
    readQueues: () =>
      broker.queueStats({
        ...(settings.queues ? { queues: settings.queues } : {}),
        timeoutMs: settings.scrapeTimeoutMs,
      }),
    listWorkers: () => rt.workers.list(),
    now: () => core.clock.now(),
    ...(settings.queues ? { queues: settings.queues } : {}),
    timeoutMs: settings.scrapeTimeoutMs,
    log,
  });

  named(
    "jetstate_queue_paused",
    (name) =>
      new Gauge({
        name,
        help: "1 for a paused queue, 0 for a running one, of every queue ever configured or paused (rt.queues, read at scrape time).",
        labelNames: ["queue"],
        registers,
        async collect() {
          this.reset();
          let timer: NodeJS.Timeout | undefined;
          const late = new Promise<undefined>((resolve) => {
            timer = setTimeout(() => resolve(undefined), settings.scrapeTimeoutMs);
            timer.unref();
          });
          // A read that fails or is late leaves no series for this scrape, as the other scrape gauges.
          const queues = await Promise.race([rt.queues.list().catch(() => undefined), late]);
          clearTimeout(timer);
          for (const q of queues ?? []) this.set({ queue: q.queue }, q.paused ? 1 : 0);
        },
      }),
  );

  // The memory broker has no connection: no connection series there.
  let unsubscribe = () => {};
  if (broker.kind === "nats") {
    named(
      "jetstate_connection_state",
      (name) =>
        new Gauge({
          name,
          help: "The NATS connection's state: 1 for the current one, 0 for the others.",
          labelNames: ["state"],
          registers,
          collect() {
            const current = rt.connection.state;
            for (const state of connectionStates) this.set({ state }, state === current ? 1 : 0);
          },
        }),
    );
    const reconnects = named(
      "jetstate_connection_reconnects_total",
      (name) =>
        new Counter({
          name,
          help: "Times the NATS connection came back to connected after it had been connected.",
          registers,
        }),
    );
    let wasConnected = rt.connection.state === "connected";
    unsubscribe = rt.connection.subscribe(({ state }) => {
      if (state !== "connected") return;
      if (wasConnected) reconnects.inc();
      wasConnected = true;
    });
  }

  names.push("jetstate_jobs", "jetstate_jobs_finished_total", "jetstate_job_stalls_total");
  const jobs = new JobsMetrics(core, broker, registry, log);

  let stopped: Promise<void> | undefined;
  return {
    registry,
    metrics: () => registry.metrics(),
    fetch: async (request) => {
      if (new URL(request.url).pathname !== "/metrics") return new Response("not found\n", { status: 404 });
      if (request.method !== "GET" && request.method !== "HEAD")
        return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
      const body = await registry.metrics();
      return new Response(request.method === "HEAD" ? null : body, {
        headers: { "content-type": registry.contentType },
      });
    },
    stop: () => {
      stopped ??= (async () => {
        unlisten();
        unsubscribe();
        await jobs.stop();
        for (const name of names) registry.removeSingleMetric(name);
      })();
      return stopped;
    },
  };
};
