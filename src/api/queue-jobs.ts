import type { Broker } from "../adapters/broker.ts";
import type { LoopGroup } from "../effects/loop-group.ts";
import { untilDone } from "../effects/retry.ts";
import { inBatches } from "../kernel/batches.ts";
import { isTransient } from "../kernel/errors.ts";
import type { JobRecord } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import { abortRace } from "../kernel/signals.ts";
import type { RecordFeed } from "./record-feed.ts";

/** What a worker does with what it hears of its queue's jobs. */
export interface QueueJobsReader {
  /** A record of any queue at its revision, from the runtime's watch or read by a pass. */
  onRecord(record: JobRecord, revision: number): void;
  /** The lane is there (or lane tasks wait without it): pull it. */
  onLane(): void;
  /** The jobs followed now: a pass reads them again (one may have ended meanwhile). */
  followed(): Iterable<string>;
  /** The revisions known may be of a store made again since (`RecordListener.onPlaced`): forgotten. */
  forgetRevisions(): void;
}

/**
 * How a worker hears of its queue's jobs: every record change through its
 * runtime's record watch, and, each time that watch is (again) in place, a
 * pass over the jobs already there: the queue's jobs with a consumer of
 * their own, the jobs it follows, and the lane if it is there. O(the
 * queue's live jobs), never the records kept. A record the watch handed
 * over while a pass read is newer than the pass's: the pass's is dropped.
 * Each pass ends before `stopped()` does, and reads nothing after `signal`
 * aborts; a read in flight then is not waited for (its answer is dropped).
 * The watch's records are handed over until `hearUntil` aborts (`signal` by
 * default): a stopping worker still hears its jobs end.
 */
export class QueueJobs {
  readonly #broker: Broker;
  readonly #queue: string;
  readonly #reader: QueueJobsReader;
  readonly #signal: AbortSignal;
  readonly #log: Logger;
  /** The records the watch handed over while a pass ran, one set per pass: those it read are older. */
  readonly #heard = new Set<Set<string>>();
  /** The passes running. */
  readonly #passes = new Set<Promise<void>>();

  constructor(
    deps: { broker: Broker; records: RecordFeed; loops: LoopGroup; log: Logger },
    queue: string,
    reader: QueueJobsReader,
    signal: AbortSignal,
    name: string,
    hearUntil: AbortSignal = signal,
  ) {
    this.#broker = deps.broker;
    this.#queue = queue;
    this.#reader = reader;
    this.#signal = signal;
    this.#log = deps.log;
    const unlisten = deps.records.listen({
      onRecord: (record, revision) => {
        for (const heard of this.#heard) heard.add(record.id);
        reader.onRecord(record, revision);
      },
      onPlaced: (forget) => {
        if (forget) reader.forgetRevisions();
        const pass = this.#passed().finally(() => this.#passes.delete(pass));
        this.#passes.add(pass);
        deps.loops.track(name, () => pass);
      },
    });
    hearUntil.addEventListener("abort", unlisten, { once: true });
  }

  /** Every pass running has ended. */
  stopped(): Promise<unknown> {
    return Promise.all([...this.#passes]);
  }

  /** A pass, read again after a backoff while it fails transiently. */
  #passed(): Promise<void> {
    return untilDone(
      (signal) => this.#pass(signal),
      { initialMs: 500, maxMs: 5000, jitter: true },
      this.#signal,
      isTransient,
      (error, again) =>
        this.#log.warn(
          { err: error },
          again
            ? "the queue's jobs not read; trying again"
            : "the queue's jobs not read; those running now are not pulled here",
        ),
    );
  }

  async #pass(signal: AbortSignal): Promise<void> {
    const heard = new Set<string>();
    this.#heard.add(heard);
    // A worker that stops waits for no read (a silent JetStream API answers at its timeout).
    const unlessStopped = abortRace(signal);
    let failed: unknown;
    try {
      const found = await unlessStopped.race(this.#broker.queueConsumers(this.#queue));
      if (found === undefined || signal.aborted) return;
      if (found.lane) this.#reader.onLane();
      await inBatches([...new Set([...found.jobIds, ...this.#reader.followed()])], async (jobId) => {
        // A stopped worker reads no more records, and follows no job more.
        if (signal.aborted) return;
        try {
          const read = await unlessStopped.race(this.#broker.getRecord(jobId));
          if (read && !heard.has(jobId) && !signal.aborted) this.#reader.onRecord(read.record, read.revision);
        } catch (error) {
          // One record not read (a newer version of it, say) keeps no other job from being followed.
          if (isTransient(error)) failed ??= error;
          else this.#log.warn({ err: error, jobId }, "job's record not read; its tasks are not pulled here");
        }
      });
    } finally {
      unlessStopped.release();
      this.#heard.delete(heard);
    }
    // Read again in full after a pause: a record not read now may be of a job that runs.
    if (failed !== undefined) throw failed;
  }
}
