import type { DeadLetter } from "../adapters/dead-letters.ts";
import type { SubmitRequest } from "../effects/plan-submit.ts";
import type { SubmitHooks } from "../effects/submit-job.ts";
import type { JobRecord, JobStatus } from "../kernel/job-record.ts";
import type { JobEvents, JobEventsOptions } from "./job-events.ts";
import type { JobHandle } from "./job-handle.ts";
import { inSubmitSpan } from "./tracing.ts";

export interface JobsOptions {
  /** How often the reaper looks for submits that died (default 15 s). */
  readonly reapIntervalMs: number;
  /** Margin after a submit's commit deadline before the reaper undoes it (default 10 s). */
  readonly reapGraceMs: number;
  /** Supervision lease; a job whose supervisor died is taken over after it (default 10 s). */
  readonly leaseMs: number;
  /** Take over jobs whose supervisor died (default true). */
  readonly takeOver: boolean;
  /** Test hook: crash injection in submit. */
  readonly submitHooks?: SubmitHooks;
}

/** `rt.jobs`: submit, find and redrive jobs; a job's handle watches and cancels it. */
export interface Jobs {
  /**
   * Validates, then submits atomically; resolves once the job is committed
   * (workers can see it) with its handle. A failed submit is rolled back and
   * rejects. The same idempotency key gives the same job.
   */
  submit<Task, Result>(request: SubmitRequest<Task, Result>): Promise<JobHandle<Result>>;
  /** The job with this id, watched by this runtime from now on; undefined if unknown. */
  get<Result = unknown>(id: string): Promise<JobHandle<Result> | undefined>;
  /**
   * The job's record as stored now (status, counts, reason, times), read
   * once: nothing is watched, unlike `get`. Undefined if unknown or not
   * committed yet.
   * @example
   * const record = await rt.jobs.record(id);
   * if (record?.status === "stalled") log.warn({ since: new Date(record.updatedAt) }, "job stalled");
   */
  record(id: string): Promise<JobRecord | undefined>;
  /**
   * Job records a page at a time, in the order they were last written; all,
   * or those of a status or queue. Pass a page's `next` as `cursor` to get
   * the page after it; no `next`: the listing reached the end. A job written
   * while the pages are read (its progress, its end) moves past the cursor:
   * a later page lists it again, as it is then. None is skipped.
   * @example
   * let page = await rt.jobs.list({ status: "running", limit: 100 });
   * for (;;) {
   *   for (const job of page.jobs) show(job.id, job.counts);
   *   if (page.next === undefined) break;
   *   page = await rt.jobs.list({ status: "running", limit: 100, cursor: page.next });
   * }
   */
  list(query?: JobListQuery): Promise<JobPage>;
  /**
   * Tasks of the job that exhausted their deliveries, with payload and last
   * error. A task first answered by a success or a failure is not listed,
   * though a letter of it is stored (its answer stored, its ack lost on its
   * last delivery): the next redrive removes such letters. Reads the job's
   * results when it has letters (`OperationTimeout` past the operation
   * deadline and 1 ms more per 20 tasks).
   */
  deadLetters(id: string): Promise<DeadLetter[]>;
  /**
   * Sends dead tasks back to the workers (all, or those named by index or
   * task id). A finished job is reopened and supervised again. An
   * `InvalidArgument` naming `id` when there is no such job, `taskIds` when
   * none of the tasks is dead.
   */
  redrive(id: string, taskIds?: ReadonlyArray<string | number>): Promise<JobHandle>;
  /**
   * The events of every job (or of `queue`'s) from now on (created, progress,
   * stalled, reopened, succeeded, failed, cancelled), read from the job
   * records: any process may read them, and reading supervises nothing.
   * Each job's end comes once. Ends with `break`, `signal` or `rt.stop()`.
   * @example
   * for await (const e of rt.jobs.events({ queue: "detect" })) log.info({ jobId: e.jobId, counts: e.counts }, e.type);
   */
  events(options?: JobEventsOptions): JobEvents;
}

/** What `rt.jobs.list()` lists: every field optional. */
export interface JobListQuery {
  /** Only jobs of this status. */
  readonly status?: JobStatus;
  /** Only jobs of this queue. */
  readonly queue?: string;
  /**
   * Jobs per page at most, 1 to 1,000.
   * @defaultValue 100
   */
  readonly limit?: number;
  /**
   * The `next` of the page before, given with the same filter; from the start when absent. One
   * given with another filter, or from before the server came back with an empty store, is an
   * `InvalidArgument` (`cursor`).
   */
  readonly cursor?: string;
}

/**
 * One page of `rt.jobs.list()`. A page reads at most 10 × `limit` stored
 * records (at least 1,000), so with a filter that few jobs match it may hold
 * fewer than `limit`, or none, and still have a `next`. A job rewritten
 * while you page (its status or counts changed) moves to the end: it can be
 * listed twice, and a job that existed throughout the walk is never missed.
 * A stored record this version cannot read (a newer version's, say) is left
 * out, the cursor going past it, and said once at warn in the runtime's log.
 */
export interface JobPage {
  readonly jobs: JobRecord[];
  /** The cursor of the page after this one; absent when this page reached the end. */
  readonly next?: string;
}

/** `rt.jobs` as users see it: the registry's public calls, none of its upkeep (stop, reap). */
export const jobsFace = (registry: Jobs): Jobs => ({
  submit: (request) => inSubmitSpan(request, () => registry.submit(request)),
  get: (id) => registry.get(id),
  record: (id) => registry.record(id),
  list: (query) => registry.list(query),
  deadLetters: (id) => registry.deadLetters(id),
  redrive: (id, taskIds) => registry.redrive(id, taskIds),
  events: (options) => registry.events(options),
});
