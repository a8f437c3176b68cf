import type { JobRecords } from "../adapters/job-records.ts";
import { sleep } from "../effects/supervise-loop.ts";
import { RuntimeStopped, workOver } from "../kernel/errors.ts";
import { isFinal, type JobRecord, madeAgain } from "../kernel/job-record.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/** Where a job's end is heard and read. */
export interface RecordedEndSources {
  readonly core: RuntimeCore;
  readonly broker: Pick<JobRecords, "getRecord">;
  /** The runtime's record watch: every record written from now on, until the function returned. */
  readonly watch: (listener: (record: JobRecord) => void) => () => void;
  /** How long between two reads (a write the watch missed, while it was placed again, is read). */
  readonly readEveryMs: number;
}

/**
 * Once the job's record says it is over, from the record watch or a read;
 * undefined once no record is left. Rejects with `RuntimeStopped` as the
 * runtime stops. For a handle whose actor ended with its end not written
 * (`done()` in runtime-job-handle.ts): a takeover writes it, or a cancel did.
 * Given the job's `submitId`, a record another submit of its key made again
 * (`madeAgain`: the store came back empty) is answered at once: the job is
 * lost, and that record's end is another job's.
 */
export const recordedEnd = async (
  { core, broker, watch, readEveryMs }: RecordedEndSources,
  id: string,
  submitId?: string,
): Promise<JobRecord | undefined> => {
  const over = (record: JobRecord) =>
    isFinal(record.status) || (submitId !== undefined && madeAgain(record, submitId));
  // Aborted as the runtime stops, and once this returns: a wait the watch cut short leaves no
  // timer behind.
  const waiting = core.stopLinks.link();
  const { signal } = waiting;
  let heard: ((record: JobRecord) => void) | undefined;
  const written = new Promise<JobRecord>((resolve) => {
    heard = resolve;
  });
  const unlisten = watch((record) => {
    if (record.id === id && over(record)) heard?.(record);
  });
  try {
    for (;;) {
      if (signal.aborted)
        throw new RuntimeStopped({ message: "runtime stopped before the job's end was written" });
      // A read that fails is made again `readEveryMs` on.
      const read = await broker.getRecord(id).then(
        (found) => ({ found }),
        () => undefined,
      );
      if (read && !read.found) return undefined;
      const record = read?.found?.record;
      if (record && over(record)) return record;
      const end = await Promise.race([written, sleep(readEveryMs, signal).then(() => undefined)]);
      if (end) return end;
    }
  } finally {
    unlisten();
    waiting.abort(workOver);
    core.stopLinks.unlink(waiting);
  }
};
