import type { RecordsPage } from "../adapters/job-records.ts";
import type { Logger } from "../kernel/logger.ts";

/** Ids remembered at most: past them the oldest is forgotten (and said again should it be read again). */
const maxTold = 10_000;

/**
 * Says each job record a listing left out (a page's `unreadable`: one this
 * version cannot decode, a newer version's say) once at warn, not at every
 * page that reads it again: `rt.jobs.list()` and `GET /jobs` answer the
 * other jobs, and the one who runs them learns which record is not read.
 */
export const unreadableListed = (log: Logger, leftOut: string) => {
  const told = new Set<string>();
  return (page: RecordsPage): void => {
    for (const { id, error } of page.unreadable ?? []) {
      if (told.has(id)) continue;
      if (told.size >= maxTold) told.delete(told.values().next().value as string);
      told.add(id);
      log.warn({ jobId: id, err: error }, `job's record not read; ${leftOut}`);
    }
  };
};
