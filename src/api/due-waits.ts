import type { TaskDelivery } from "../adapters/task-queue.ts";
import { type Clock, pause } from "../kernel/clock.ts";
import type { JobRecord } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";

/** How long before a delayed job's first task is due its workers start pulling it. */
const dueEarlyMs = 1000;

/**
 * A worker's waits for its delayed jobs' due times. A delayed job whose
 * tasks are all held has nothing to pull before the first is due: its pull
 * loop starts then (less `dueEarlyMs`, for clocks that disagree), not at
 * once. An idle loop asked the server every 3 s, for each such job and each
 * worker of its queue, while its tasks were held. Tasks visible now (some
 * were due at the submit), or counts not read: pulled at once, as any
 * job's. A write of the job's record wakes the wait to count again (`wake`);
 * one naming a redrive the wait did not start with ends it: a redrive writes
 * its record before it publishes its tasks (its point of no return), so
 * counted then, its task is not there yet, and the wait slept until the due
 * time with the redriven task stored.
 */
export class DueWaits {
  readonly #counts: Pick<TaskDelivery, "consumerCounts">;
  readonly #clock: Clock;
  readonly #log: Logger;
  /** The jobs waiting, each with what wakes it early. */
  readonly #waking = new Map<string, (written?: JobRecord) => void>();

  constructor(counts: Pick<TaskDelivery, "consumerCounts">, clock: Clock, log: Logger) {
    this.#counts = counts;
    this.#clock = clock;
    this.#log = log;
  }

  /** Resolves once the job's tasks may be pulled, or once `signal` aborts. */
  async until(record: JobRecord, signal: AbortSignal): Promise<void> {
    const dueAt = (record.runAt ?? 0) - dueEarlyMs;
    let redriven = false;
    while (dueAt > this.#clock.now() && !signal.aborted && !redriven) {
      // Armed before the count: a stop, a cancel or a record write while the count is read
      // (its answer may predate a redrive's task) is not lost. It counts again, or ends.
      const wake = new AbortController();
      const woken = (written?: JobRecord) => {
        if (written?.redrive !== undefined && written.redrive !== record.redrive) redriven = true;
        wake.abort();
      };
      this.#waking.set(record.id, woken);
      const stopped = () => woken();
      signal.addEventListener("abort", stopped, { once: true });
      try {
        const counts = await this.#counts.consumerCounts(record).catch(() => undefined);
        if (counts === undefined || counts.waiting + counts.held > 0 || redriven) return;
        if (wake.signal.aborted) continue;
        this.#log.debug(
          { jobId: record.id, runAt: record.runAt },
          "delayed job: pulled once its first task is due",
        );
        // From now: the counts may have taken a while.
        await pause(this.#clock, dueAt - this.#clock.now(), wake.signal);
      } finally {
        signal.removeEventListener("abort", stopped);
        if (this.#waking.get(record.id) === woken) this.#waking.delete(record.id);
      }
    }
  }

  /** The job's record was written (`written`): its wait, if any, counts again, or ends on a new redrive. */
  wake(written: JobRecord): void {
    this.#waking.get(written.id)?.(written);
  }
}
