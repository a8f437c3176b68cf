import { jobIdOfSubject, planCleanup } from "../../kernel/cleanup-plan.ts";
import type { CleanupOptions, CleanupReport } from "../broker-admin.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import type { NatsJobLeases } from "./job-leases.ts";
import type { NatsContext } from "./nats-context.ts";
import { streamNamesStartingWith } from "./streams.ts";

export type { CleanupOptions, CleanupReport } from "../broker-admin.ts";

/**
 * Removes what finished jobs and crashed runs leave behind: consumers and
 * task messages of jobs that are over (or have no record), on every queue's
 * tasks stream, and — after the retention period — the records, results and
 * dead letters of finished jobs.
 * A submit still in progress (`submitting`) is never touched: that is the
 * reaper's.
 */
export const cleanupJobs = async (
  core: NatsContext,
  broker: NatsJobBroker,
  leases: NatsJobLeases,
  options: CleanupOptions & { readonly retentionMs: number; readonly now?: number },
): Promise<CleanupReport> => {
  const dryRun = options.dryRun ?? false;
  const now = options.now ?? Date.now();
  const n = broker.names;
  const { over, expired, resultsGone } = planCleanup(await broker.listRecords(), options.retentionMs, now);
  const report: CleanupReport = {
    dryRun,
    consumersDeleted: [],
    tasksPurged: [],
    recordsRemoved: expired.map((r) => r.id),
    resultsPurged: [],
    leasesRemoved: [],
  };

  await core.run("cleanup", async (nc) => {
    const { jsm } = await broker.handles(nc);
    // Every queue's tasks stream, whoever set it up: a queue no runtime uses any more still holds leftovers.
    const tasksStreams = await streamNamesStartingWith(jsm, n.tasksStreamPrefix);
    const consumers: Array<{ stream: string; name: string }> = [];
    const subjects: Array<{ stream: string; subject: string }> = [];
    for (const stream of tasksStreams) {
      for await (const consumer of jsm.consumers.list(stream)) {
        if (over(consumer.name)) consumers.push({ stream, name: consumer.name });
      }
      const tasks = await jsm.streams.info(stream, { subjects_filter: `${core.options.prefix}.tasks.>` });
      for (const [subject, count] of Object.entries(tasks.state.subjects ?? {})) {
        if (count > 0 && over(jobIdOfSubject(subject))) subjects.push({ stream, subject });
      }
    }
    report.consumersDeleted.push(...consumers.map((c) => c.name));
    report.tasksPurged.push(...subjects.map((s) => s.subject));
    const results = await jsm.streams.info(n.resultsStream, {
      subjects_filter: `${core.options.prefix}.results.>`,
    });
    for (const subject of Object.keys(results.state.subjects ?? {})) {
      if (resultsGone(jobIdOfSubject(subject))) report.resultsPurged.push(subject);
    }
    if (dryRun) return;
    // Deleted meanwhile (the job's own end) or not now: the next cleanup finds what is left.
    for (const { stream, name } of consumers) await jsm.consumers.delete(stream, name).catch(() => undefined);
    for (const { stream, subject } of subjects) await jsm.streams.purge(stream, { filter: subject });
    for (const subject of report.resultsPurged) await jsm.streams.purge(n.resultsStream, { filter: subject });
    for (const record of expired) {
      await jsm.streams
        .purge(n.deadStream, { filter: n.deadSubject(record.queue, record.id) })
        // No dead-letter stream (none ever stored) or not now: its max age removes them anyway.
        .catch(() => undefined);
    }
  });

  for (const { jobId } of await leases.list()) {
    if (over(jobId)) report.leasesRemoved.push(jobId);
  }
  if (!dryRun) {
    for (const jobId of report.leasesRemoved) await leases.remove(jobId);
    for (const record of expired) {
      const found = await broker.getRecord(record.id);
      // Changed since it was read (a redrive: no longer expired), or not now: the next cleanup looks again.
      if (found) await broker.deleteRecord(record.id, found.revision).catch(() => undefined);
    }
  }
  return report;
};
