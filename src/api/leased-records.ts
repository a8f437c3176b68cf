import type { Broker } from "../adapters/broker.ts";
import { inBatches } from "../kernel/batches.ts";
import { isTransient } from "../kernel/errors.ts";
import type { JobRecord } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";

/**
 * Reads the records of jobs that hold a supervision lease, 32 at a time: the
 * HTTP API's candidates (`activeJobsOf` in http.ts) and the dashboard's list
 * (`jobBook`). A record that cannot be read (one of a newer version, say, or
 * a read that timed out) is left out and read again the next time: it keeps
 * no other job from being served or shown, as at a native worker
 * (queue-jobs.ts). Both read every second or so: a record that cannot be
 * decoded is said once at warn while its job holds its lease, not each time.
 */
export const leasedRecords = (broker: Broker, log: Logger, leftOut: string) => {
  const told = new Set<string>();
  return {
    /** The records of `ids` read now; a job with no record (or one not read) is not in it. */
    read: async (ids: readonly string[]): Promise<JobRecord[]> => {
      const found = await inBatches(ids, async (jobId) => {
        try {
          return (await broker.getRecord(jobId))?.record;
        } catch (error) {
          if (isTransient(error)) log.debug({ jobId, err: error }, `job's record not read now; ${leftOut}`);
          else if (!told.has(jobId)) {
            told.add(jobId);
            log.warn({ jobId, err: error }, `job's record not read; ${leftOut}`);
          }
          return undefined;
        }
      });
      return found.filter((record) => record !== undefined);
    },
    /** The jobs holding a lease now: one that no longer does is forgotten (said again should it come back). */
    leased: (jobIds: ReadonlySet<string>): void => {
      for (const jobId of told) if (!jobIds.has(jobId)) told.delete(jobId);
    },
  };
};
