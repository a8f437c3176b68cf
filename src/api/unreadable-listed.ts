import type { RecordsPage } from "../adapters/job-records.ts";
import { firstTime } from "../kernel/first-time.ts";
import type { Logger } from "../kernel/logger.ts";

/**
 * Says each job record a listing left out (a page's `unreadable`: one this
 * version cannot decode, a newer version's say) once at warn, not at every
 * page that reads it again: `rt.jobs.list()` and `GET /jobs` answer the
 * other jobs, and the one who runs them learns which record is not read.
 */
export const unreadableListed = (log: Logger, leftOut: string) => {
  // 10,000 ids remembered at most: past them the oldest is said again should it be read again.
  const firstTold = firstTime();
  return (page: RecordsPage): void => {
    for (const { id, error } of page.unreadable ?? []) {
      if (!firstTold(id)) continue;
      log.warn({ jobId: id, err: error }, `job's record not read; ${leftOut}`);
    }
  };
};
