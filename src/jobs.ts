import { type Actor, createActor, fromCallback, fromPromise } from "xstate";
import type { NatsJobBroker } from "./adapters/nats/job-broker.ts";
import { finalizeJob, recordProgress } from "./effects/finalize-job.ts";
import { isFinal, type JobRecord, type JobStatus } from "./effects/job-record.ts";
import { planSubmit, type SubmitRequest } from "./effects/plan-submit.ts";
import { reapSubmits } from "./effects/reap-submits.ts";
import { type SubmitHooks, submitJob } from "./effects/submit-job.ts";
import { sleep, superviseLoop } from "./effects/supervise-loop.ts";
import { InvalidArgument } from "./errors.ts";
import { childLogger, type Logger } from "./logger.ts";
import { type JobContext, type JobMachine, jobMachine, type ResultEntry } from "./machines/job.machine.ts";
import type { RuntimeCore } from "./runtime.ts";

export interface JobSnapshot {
  readonly id: string;
  readonly queue: string;
  readonly status: JobStatus;
  readonly total: number;
  readonly done: number;
  readonly failed: number;
  readonly dead: number;
  /** Tasks answered per second (EWMA). */
  readonly throughput: number;
  /** Estimated time to the end, null until there is a rate. */
  readonly etaMs: number | null;
  readonly reason: string | null;
  readonly startedAt: number;
}

export type TaskResult<Result> =
  | { readonly taskId: string; readonly index: number; readonly ok: true; readonly result: Result }
  | {
      readonly taskId: string;
      readonly index: number;
      readonly ok: false;
      readonly error: string;
      readonly dead: boolean;
    };

export interface JobHandle<Result = unknown> {
  readonly id: string;
  readonly queue: string;
  snapshot(): JobSnapshot;
  /** Live state at a bounded rate (≤ 10 per second; the final state always arrives). */
  subscribe(listener: (snapshot: JobSnapshot) => void): () => void;
  /** Settles on `succeeded` or `failed` with the final snapshot (never rejects for a failed job). */
  done(): Promise<JobSnapshot>;
  /** Every task's result once, as stored (a redelivered task appears once). */
  results(): AsyncIterable<TaskResult<Result>>;
  /** Ends the job as `failed` with the reason: remaining tasks purged, consumer deleted. */
  cancel(reason: string): Promise<JobSnapshot>;
  /** The XState actor, for the inspector and tests. */
  readonly actor: Actor<JobMachine>;
}

export interface JobsOptions {
  /** How often the reaper looks for submits that died (default 15 s). */
  readonly reapIntervalMs: number;
  /** Margin after a submit's commit deadline before the reaper undoes it (default 10 s). */
  readonly reapGraceMs: number;
  /** Test hook: crash injection in submit. */
  readonly submitHooks?: SubmitHooks;
}

const decoder = new TextDecoder();
const maxUpdatesPerSecond = 10;

const topStatus = (value: unknown): JobStatus =>
  (typeof value === "string" ? value : Object.keys(value as object)[0]) as JobStatus;

export const snapshotOf = (actor: Actor<JobMachine>): JobSnapshot => {
  const { value, context: c } = actor.getSnapshot();
  return {
    id: c.jobId,
    queue: c.queue,
    status: topStatus(value),
    total: c.total,
    done: c.done,
    failed: c.failed,
    dead: c.dead,
    throughput: Math.round(c.throughput * 10) / 10,
    etaMs: c.etaMs,
    reason: c.reason,
    startedAt: c.startedAt,
  };
};

const isRecorded = (actor: Actor<JobMachine>) => {
  const s = actor.getSnapshot();
  return s.matches({ succeeded: "recorded" }) || s.matches({ failed: "recorded" });
};

/** `rt.jobs`: submit, find and supervise jobs. One actor per job this runtime supervises. */
export class Jobs {
  readonly #core: RuntimeCore;
  readonly #broker: NatsJobBroker;
  readonly #log: Logger;
  readonly #options: JobsOptions;
  readonly #handles = new Map<string, Promise<JobHandle>>();

  constructor(core: RuntimeCore, broker: NatsJobBroker, options: JobsOptions) {
    this.#core = core;
    this.#broker = broker;
    this.#log = childLogger(core.logger, { actor: "job" });
    this.#options = options;
    void this.#reapLoop();
  }

  /**
   * Validates, then submits atomically; resolves once the job is committed
   * (workers can see it) with its handle. A failed submit is rolled back and
   * rejects. The same idempotency key gives the same job.
   */
  async submit<Task, Result>(request: SubmitRequest<Task, Result>): Promise<JobHandle<Result>> {
    const maxPayload = await this.#core.run("server.info", async (nc) => nc.info?.max_payload ?? 1024 * 1024);
    const plan = await planSubmit(request, maxPayload, Date.now());
    const existing = this.#handles.get(plan.record.id);
    if (existing) return existing as Promise<JobHandle<Result>>;
    const created = this.#supervise(plan.record, undefined, plan.bodies);
    this.#handles.set(plan.record.id, created);
    created.catch(() => this.#handles.delete(plan.record.id));
    return created as Promise<JobHandle<Result>>;
  }

  /** The job with this id, supervised by this runtime from now on; undefined if unknown. */
  async get<Result = unknown>(id: string): Promise<JobHandle<Result> | undefined> {
    const local = this.#handles.get(id);
    if (local) return local as Promise<JobHandle<Result>>;
    if (typeof id !== "string" || id === "")
      throw new InvalidArgument({ message: "id: must be a job id", field: "id" });
    const found = await this.#broker.getRecord(id);
    if (!found) return undefined;
    const again = this.#handles.get(id);
    if (again) return again as Promise<JobHandle<Result>>;
    const handle = this.#supervise(found.record, found.record.status);
    this.#handles.set(id, handle);
    return handle as Promise<JobHandle<Result>>;
  }

  async list(filter: { status?: JobStatus; queue?: string } = {}): Promise<JobRecord[]> {
    const records = await this.#broker.listRecords();
    return records.filter(
      (r) => (!filter.status || r.status === filter.status) && (!filter.queue || r.queue === filter.queue),
    );
  }

  /** Stops supervising (jobs go on; another runtime or a restart resumes them). */
  async stop(): Promise<void> {
    const handles = await Promise.allSettled(this.#handles.values());
    for (const h of handles) if (h.status === "fulfilled") h.value.actor.stop();
    this.#handles.clear();
  }

  async #supervise(
    record: JobRecord,
    resumeFrom?: JobStatus,
    bodies?: readonly string[],
  ): Promise<JobHandle> {
    const core = this.#core;
    const broker = this.#broker;
    const log = childLogger(core.logger, { actor: "job", jobId: record.id, queue: record.queue });
    const stopping = core.stopping;
    const machine = jobMachine.provide({
      actors: {
        submit: fromPromise(async ({ signal }) => {
          if (!bodies) throw new Error("nothing to submit");
          const outcome = await submitJob(broker, {
            record,
            bodies,
            now: Date.now,
            signal: AbortSignal.any([signal, stopping]),
            ...(this.#options.submitHooks ? { hooks: this.#options.submitHooks } : {}),
          });
          if (outcome.kind === "existing") log.info("idempotency key matched an existing job");
        }),
        feed: fromCallback(({ sendBack }) => {
          if (resumeFrom && isFinal(resumeFrom)) return () => undefined;
          const ac = new AbortController();
          let nextSeq = 1;
          void superviseLoop(
            core.connection,
            (nc, signal) =>
              broker.readResults(
                nc,
                record.id,
                nextSeq,
                (data, seq) => {
                  nextSeq = seq + 1;
                  const entries = parseEntries(data);
                  if (entries) sendBack({ type: "results.received", entries, at: Date.now() });
                },
                signal,
              ),
            AbortSignal.any([ac.signal, stopping]),
            { name: "results", log },
          );
          return () => ac.abort();
        }),
        clock: fromCallback(({ sendBack, input }) => {
          const timer = setInterval(() => sendBack({ type: "clock.tick", now: Date.now() }), input.everyMs);
          return () => clearInterval(timer);
        }),
        finalize: fromPromise(({ input }) => finalizeJob(broker, input, Date.now)),
      },
    });
    const actor = createActor(machine, {
      id: `job:${record.id}`,
      input: {
        jobId: record.id,
        queue: record.queue,
        total: record.total,
        settings: record.settings,
        now: Date.now(),
        ...(resumeFrom ? { resumeFrom, counts: record.counts } : {}),
        ...(record.reason ? { reason: record.reason } : {}),
      },
      ...(core.inspect ? { inspect: core.inspect.inspect } : {}),
    });
    this.#persistAndLog(actor, log);
    actor.start();
    const handle = this.#handle(actor, record);
    if (!resumeFrom) {
      // Resolve once committed; a submit that failed rejects (it was rolled back).
      await new Promise<void>((resolve, reject) => {
        const check = () => {
          const s = actor.getSnapshot();
          if (s.matches("queuing")) return false;
          if (s.matches("failed") && s.context.reason?.startsWith("submit failed")) {
            reject(new Error(s.context.reason));
          } else resolve();
          return true;
        };
        if (check()) return;
        const sub = actor.subscribe(() => {
          if (check()) sub.unsubscribe();
        });
      });
    }
    return handle;
  }

  #handle(actor: Actor<JobMachine>, record: JobRecord): JobHandle {
    const broker = this.#broker;
    const core = this.#core;
    return {
      id: record.id,
      queue: record.queue,
      actor,
      snapshot: () => snapshotOf(actor),
      subscribe: (listener) => throttledSubscribe(actor, listener),
      done: () => whenRecorded(actor),
      cancel: async (reason) => {
        actor.send({ type: "job.cancel", reason });
        return whenRecorded(actor);
      },
      results: () => readAllResults(core, broker, actor),
    };
  }

  /** One log line per state change; progress written to the record at most once a second. */
  #persistAndLog(actor: Actor<JobMachine>, log: Logger): void {
    let last: JobStatus | undefined;
    let timer: NodeJS.Timeout | undefined;
    const write = () => {
      timer = undefined;
      const s = snapshotOf(actor);
      if (isFinal(s.status)) return;
      recordProgress(this.#broker, s.id, s.status, s, Date.now()).catch((error) =>
        log.warn({ err: error }, "progress not recorded"),
      );
    };
    actor.subscribe((snapshot) => {
      const s = snapshotOf(actor);
      if (s.status !== last) {
        log.info(
          {
            state: s.status,
            from: last ?? null,
            done: s.done,
            failed: s.failed,
            dead: s.dead,
            total: s.total,
            ...(s.reason ? { reason: s.reason } : {}),
          },
          `job ${last ?? "new"} → ${s.status}`,
        );
        last = s.status;
        if (s.status !== "queuing" && !isFinal(s.status)) write();
      } else if (!timer && !isFinal(s.status) && snapshot.status === "active") {
        timer = setTimeout(write, 1000);
      }
      if (isFinal(s.status) && timer) {
        clearTimeout(timer);
        timer = undefined;
      }
      // Once the end is recorded nothing is left to supervise: stop the feed and the clock.
      if (isRecorded(actor) && snapshot.status === "active") queueMicrotask(() => actor.stop());
    });
  }

  async #reapLoop(): Promise<void> {
    const stopping = this.#core.stopping;
    while (!stopping.aborted) {
      try {
        const report = await reapSubmits(this.#broker, Date.now, this.#options.reapGraceMs);
        if (report.rolledBack.length + report.rolledForward.length > 0) {
          this.#log.warn({ ...report }, "reaper finished submits that died");
        }
      } catch (error) {
        if (!stopping.aborted) this.#log.debug({ err: error }, "reaper pass failed");
      }
      await sleep(this.#options.reapIntervalMs, stopping);
    }
  }

  /** Runs one reaper pass now (tests, admin). */
  reap(now: () => number = Date.now) {
    return reapSubmits(this.#broker, now, this.#options.reapGraceMs);
  }
}

const parseEntries = (data: Uint8Array): ResultEntry[] | undefined => {
  try {
    const value = JSON.parse(decoder.decode(data));
    return Array.isArray(value) ? (value as ResultEntry[]) : undefined;
  } catch {
    return undefined;
  }
};

const whenRecorded = (actor: Actor<JobMachine>): Promise<JobSnapshot> =>
  new Promise((resolve) => {
    if (isRecorded(actor)) return resolve(snapshotOf(actor));
    const sub = actor.subscribe(() => {
      if (!isRecorded(actor)) return;
      sub.unsubscribe();
      resolve(snapshotOf(actor));
    });
  });

const throttledSubscribe = (actor: Actor<JobMachine>, listener: (s: JobSnapshot) => void) => {
  const gap = 1000 / maxUpdatesPerSecond;
  let lastAt = 0;
  let lastKey = "";
  let timer: NodeJS.Timeout | undefined;
  const emit = () => {
    timer = undefined;
    lastAt = Date.now();
    const s = snapshotOf(actor);
    const key = `${s.status}/${s.done}/${s.failed}/${s.dead}/${s.etaMs}`;
    if (key === lastKey) return;
    lastKey = key;
    listener(s);
  };
  const sub = actor.subscribe(() => {
    if (isRecorded(actor)) {
      clearTimeout(timer);
      return emit();
    }
    if (timer) return;
    const wait = gap - (Date.now() - lastAt);
    if (wait <= 0) emit();
    else timer = setTimeout(emit, wait);
  });
  return () => {
    clearTimeout(timer);
    sub.unsubscribe();
  };
};

/** Reads the job's results stream from the start, once per task, until the job is over and all are read. */
async function* readAllResults<Result>(
  core: RuntimeCore,
  broker: NatsJobBroker,
  actor: Actor<JobMachine>,
): AsyncIterable<TaskResult<Result>> {
  const { jobId, total } = actor.getSnapshot().context as JobContext;
  const seen = new Uint8Array(Math.ceil(total / 8));
  const queue: TaskResult<Result>[] = [];
  let wake: (() => void) | undefined;
  const ac = new AbortController();
  let nextSeq = 1;
  let yielded = 0;
  const loop = superviseLoop(
    core.connection,
    (nc, signal) =>
      broker.readResults(
        nc,
        jobId,
        nextSeq,
        (data, seq) => {
          nextSeq = seq + 1;
          for (const raw of (JSON.parse(decoder.decode(data)) as RawResult[]) ?? []) {
            const i = raw.i;
            if ((seen[i >> 3]! & (1 << (i & 7))) !== 0) continue;
            seen[i >> 3] = seen[i >> 3]! | (1 << (i & 7));
            queue.push(
              raw.ok
                ? { taskId: `${jobId}.${i}`, index: i, ok: true, result: raw.r as Result }
                : {
                    taskId: `${jobId}.${i}`,
                    index: i,
                    ok: false,
                    error: raw.e ?? "failed",
                    dead: raw.dead === true,
                  },
            );
          }
          wake?.();
        },
        signal,
      ),
    AbortSignal.any([ac.signal, core.stopping]),
    { name: "results-reader", log: core.logger },
  );
  const onChange = actor.subscribe(() => wake?.());
  try {
    for (;;) {
      while (queue.length > 0) {
        yielded++;
        yield queue.shift()!;
      }
      const c = actor.getSnapshot().context;
      if (isRecorded(actor) && yielded >= c.done + c.failed + c.dead) return;
      if (core.stopping.aborted) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = undefined;
    }
  } finally {
    onChange.unsubscribe();
    ac.abort();
    await loop;
  }
}

interface RawResult {
  readonly i: number;
  readonly ok: boolean;
  readonly r?: unknown;
  readonly e?: string;
  readonly dead?: boolean;
}
