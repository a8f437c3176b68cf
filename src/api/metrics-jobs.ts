import { Counter, Gauge, type Registry } from "prom-client";
import type { Broker } from "../adapters/broker.ts";
import type { JobEvent } from "../kernel/job-event.ts";
import { SubmitPhase } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import { jobEvents } from "./job-events.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/** The live statuses the jobs gauge counts; an end leaves the gauge for `jetstate_jobs_finished_total`. */
const liveStatuses = ["running", "stalled"] as const;
type LiveStatus = (typeof liveStatuses)[number];
/** The one page of live records read at start (`listRecordsPage` bounds what it scans: 10 × this). */
const seedLimit = 1000;

/**
 * Jobs by queue and status, from the record changes (the reader behind
 * `rt.jobs.events()`), never from a listing per scrape: a scrape costs
 * O(live jobs known), not O(jobs stored). A job is known from its first
 * record change after the start (its commit, a progress write at most once
 * a second while it is answered, a stall), or from the one bounded page of
 * running and stalled records read at the start; it is forgotten at its end.
 */
export class JobsMetrics {
  readonly #live = new Map<string, { queue: string; status: LiveStatus }>();
  /** Ended while the start's page was read: that page must not bring them back. */
  #endedDuringSeed: Set<string> | undefined = new Set();
  readonly #reader: ReturnType<typeof jobEvents>;
  readonly #finished: Counter<"queue" | "status">;
  readonly #stalls: Counter<"queue">;
  readonly #read: Promise<void>;

  constructor(
    core: Pick<RuntimeCore, "loops" | "stopLinks" | "clock">,
    broker: Broker,
    registry: Registry,
    log: Logger,
  ) {
    const live = this.#live;
    new Gauge({
      name: "jetstate_jobs",
      help: "Live jobs known to this process (from record changes since it started, and one bounded listing at start), by queue and status (running, stalled).",
      labelNames: ["queue", "status"],
      registers: [registry],
      collect() {
        this.reset();
        for (const { queue, status } of live.values()) this.inc({ queue, status });
      },
    });
    this.#finished = new Counter({
      name: "jetstate_jobs_finished_total",
      help: "Job ends seen since this process started, by queue and status (succeeded, failed, cancelled).",
      labelNames: ["queue", "status"],
      registers: [registry],
    });
    this.#stalls = new Counter({
      name: "jetstate_job_stalls_total",
      help: "Jobs seen going stalled (no answer for stallAfterMs) since this process started, by queue.",
      labelNames: ["queue"],
      registers: [registry],
    });
    this.#reader = jobEvents(core, broker);
    this.#read = this.#consume().catch((error: unknown) =>
      log.warn({ err: error }, "job events for metrics ended"),
    );
    void this.#reader.ready.then(() => this.#seed(broker, log));
  }

  async #consume(): Promise<void> {
    for await (const event of this.#reader) this.#apply(event);
  }

  #apply(event: JobEvent): void {
    const { jobId, queue } = event;
    switch (event.type) {
      case "stalled":
        this.#stalls.inc({ queue });
        this.#live.set(jobId, { queue, status: "stalled" });
        return;
      case "created":
      case "progress":
      case "reopened":
        this.#live.set(jobId, { queue, status: event.status === "stalled" ? "stalled" : "running" });
        return;
      default:
        this.#finished.inc({ queue, status: event.type });
        this.#live.delete(jobId);
        this.#endedDuringSeed?.add(jobId);
    }
  }

  async #seed(broker: Broker, log: Logger): Promise<void> {
    try {
      const page = await broker.listRecordsPage({ statuses: [...liveStatuses], limit: seedLimit });
      for (const record of page.records) {
        if (record.phase !== SubmitPhase.committed || this.#live.has(record.id)) continue;
        if (this.#endedDuringSeed?.has(record.id)) continue;
        const status = record.status === "stalled" ? "stalled" : "running";
        this.#live.set(record.id, { queue: record.queue, status });
      }
    } catch (error) {
      log.warn({ err: error }, "live jobs not listed at start; the jobs gauge counts those changed since");
    } finally {
      this.#endedDuringSeed = undefined;
    }
  }

  async stop(): Promise<void> {
    await this.#reader.return();
    await this.#read;
  }
}
