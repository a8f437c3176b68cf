import type { RecordWatch } from "../adapters/job-records.ts";
import { InvalidArgument } from "../kernel/errors.ts";
import { type JobEvent, JobEventTranslator } from "../kernel/job-event.ts";
import type { JobRecord } from "../kernel/job-record.ts";
import { check, SubjectToken } from "../kernel/validation.ts";
import type { RuntimeCore } from "./runtime-core.ts";

export interface JobEventsOptions {
  /** Only this queue's jobs. */
  readonly queue?: string;
  /** Ends the reader when aborted, as `return()` does. */
  readonly signal?: AbortSignal;
}

/**
 * `rt.jobs.events()`: the events of every job (or one queue's) from now on,
 * read from the job records by any process that may read them; reading
 * starts no job actor and supervises nothing. Each job's end comes once.
 */
export interface JobEvents extends AsyncIterableIterator<JobEvent> {
  /**
   * Resolves once the reader watches the records: every change written after
   * that is delivered. Also resolves if the reader ends first; never rejects.
   */
  readonly ready: Promise<void>;
  /** Ends the reader (what it holds on the server is removed) and resolves once it has. */
  return(): Promise<IteratorResult<JobEvent, undefined>>;
}

/**
 * Events waiting to be read before the record watch pauses: a reader that
 * does not keep up holds at most this many, and the watch picks up where it
 * stopped (each job at its latest record) once half of them are read.
 */
const highWater = 1000;
const lowWater = highWater / 2;

const knownOptions = ["queue", "signal"];

/** How far behind this process's clock another writer's may be, for a record read again to be news. */
const writerClockSlackMs = 60_000;

const checkOptions = (options: unknown): JobEventsOptions => {
  if (typeof options !== "object" || options === null) {
    throw new InvalidArgument({ message: "options: must be an object", field: "options" });
  }
  for (const key of Object.keys(options)) {
    if (!knownOptions.includes(key))
      throw new InvalidArgument({
        message: `${key}: unknown option (known: ${knownOptions.join(", ")})`,
        field: key,
      });
  }
  const { queue, signal } = options as { queue?: unknown; signal?: unknown };
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw new InvalidArgument({ message: "signal: must be an AbortSignal", field: "signal" });
  return {
    ...(queue !== undefined ? { queue: check(SubjectToken, queue, "queue") } : {}),
    ...(signal !== undefined ? { signal } : {}),
  };
};

const done: IteratorResult<JobEvent, undefined> = { done: true, value: undefined };

/**
 * One reader: its own record watch (on NATS an ordered consumer from the
 * bucket's end), run among the runtime's loops so `rt.stop()` ends it and
 * waits for it. It ends on `return()` (a `break` out of `for await`), on
 * `options.signal` and on `rt.stop()`; then `next()` is done, and events
 * not read yet are dropped.
 */
export const jobEvents = (
  core: Pick<RuntimeCore, "loops" | "stopLinks" | "clock">,
  watch: RecordWatch,
  options: unknown = {},
): JobEvents => {
  const { queue, signal } = checkOptions(options);
  const translator = new JobEventTranslator();
  // The watch read the store again from its start (a store made again, or one that came back
  // behind what was read): a record last written well before this reader started, of a job it
  // does not remember, is not news from now on. Told, every job over before the reader started
  // came as a fresh end, and every running one as progress. "Well before": a record is stamped
  // by its writer's clock (`updatedAt`), which may be behind this one's; a new job's writes
  // skipped were never told at all.
  const oldBefore = core.clock.now() - writerClockSlackMs;
  let readAgain = false;
  const buffer: JobEvent[] = [];
  const readers: Array<(result: IteratorResult<JobEvent, undefined>) => void> = [];
  let room: { promise: Promise<void>; resolve: () => void } | undefined;
  let watching = () => {};
  const ready = new Promise<void>((resolve) => {
    watching = resolve;
  });

  // Aborted by the runtime's stop, `options.signal` or the reader's end; linked, not an
  // `AbortSignal.any` (on Node 20 each leaves a weak reference in the runtime's signal for good).
  const ending = core.stopLinks.link(signal);
  const stop = ending.signal;
  const end = () => {
    ending.abort();
    core.stopLinks.unlink(ending);
    buffer.length = 0;
    for (const reader of readers.splice(0)) reader(done);
    room?.resolve();
    watching();
  };
  stop.addEventListener("abort", end, { once: true });

  const onRecord = (record: JobRecord): Promise<void> | undefined => {
    if (stop.aborted || (queue !== undefined && record.queue !== queue)) return undefined;
    if (readAgain && record.updatedAt < oldBefore && !translator.remembers(record.id)) return undefined;
    for (const event of translator.translate(record)) {
      const reader = readers.shift();
      if (reader) reader({ done: false, value: event });
      else buffer.push(event);
    }
    if (buffer.length < highWater) return undefined;
    let resolve = () => {};
    const promise = new Promise<void>((r) => {
      resolve = r;
    });
    room = { promise, resolve };
    return promise;
  };

  const ended = new Promise<void>((resolve) => {
    // The runtime is stopping: its loops take no new one.
    if (stop.aborted) {
      end();
      return resolve();
    }
    core.loops.run("job-events", () =>
      watch
        .watchRecordChanges(onRecord, stop, (restarted) => {
          if (restarted) readAgain = true;
          watching();
        })
        .finally(() => {
          end();
          resolve();
        }),
    );
  });

  const events: JobEvents = {
    ready,
    next: () => {
      const event = buffer.shift();
      if (event !== undefined) {
        if (room && buffer.length <= lowWater) {
          room.resolve();
          room = undefined;
        }
        return Promise.resolve({ done: false, value: event });
      }
      if (stop.aborted) return Promise.resolve(done);
      return new Promise((resolve) => readers.push(resolve));
    },
    return: async () => {
      end();
      await ended;
      return done;
    },
    [Symbol.asyncIterator]: () => events,
  };
  return events;
};
