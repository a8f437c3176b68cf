import { decodeRecord, isFinal, type JobRecord, SubmitPhase } from "../../effects/job-record.ts";
import type { CleanupOptions, CleanupReport } from "../broker.ts";
import type { MemoryLeases } from "./memory-leases.ts";
import type { MemoryServer } from "./memory-server.ts";

const lastToken = (subject: string) => subject.slice(subject.lastIndexOf(".") + 1);

/**
 * What src/adapters/nats/job-cleanup.ts does on NATS, on the memory server,
 * with the same report: consumers and tasks of jobs that are over (or have
 * no record) go; after the retention period the records, results and dead
 * letters of finished jobs go too. A submit still in progress is the reaper's.
 */
export const cleanupMemory = async (
  server: MemoryServer,
  leases: MemoryLeases,
  options: CleanupOptions & { readonly retentionMs: number; readonly now?: number },
): Promise<CleanupReport> => {
  server.assertOpen("cleanup");
  const dryRun = options.dryRun ?? false;
  const now = options.now ?? server.clock.now();
  const { names, tasks } = server;
  const records = new Map<string, JobRecord>(
    server.records.live().map((entry) => {
      const record = decodeRecord(entry.value as string);
      return [record.id, record];
    }),
  );
  const over = (id: string) => {
    const record = records.get(id);
    return !record || (isFinal(record.status) && record.phase !== SubmitPhase.submitting);
  };
  const expired = [...records.values()].filter(
    (r) =>
      isFinal(r.status) &&
      r.phase !== SubmitPhase.submitting &&
      (r.finishedAt ?? r.updatedAt) + options.retentionMs <= now,
  );
  const report: CleanupReport = {
    dryRun,
    consumersDeleted: tasks.consumerNames().filter(over),
    tasksPurged: tasks.subjects().filter((subject) => over(lastToken(subject))),
    recordsRemoved: expired.map((r) => r.id),
    resultsPurged: [],
    leasesRemoved: [],
  };
  for (const subject of server.results.subjects()) {
    const id = lastToken(subject);
    if (!records.has(id) || report.recordsRemoved.includes(id)) report.resultsPurged.push(subject);
  }
  for (const { jobId } of await leases.list()) {
    if (over(jobId) || report.recordsRemoved.includes(jobId)) report.leasesRemoved.push(jobId);
  }
  if (dryRun) return report;

  for (const name of report.consumersDeleted) tasks.deleteConsumer(name);
  for (const subject of report.tasksPurged) tasks.purge(subject);
  for (const subject of report.resultsPurged) server.results.purge(subject);
  for (const record of expired) server.deadLetters.purge(names.deadSubject(record.id));
  for (const jobId of report.leasesRemoved) await leases.remove(jobId);
  for (const record of expired) {
    const entry = server.records.get("job.record.delete", record.id);
    if (entry?.value !== undefined) server.records.delete("job.record.delete", record.id, entry.revision);
  }
  return report;
};
