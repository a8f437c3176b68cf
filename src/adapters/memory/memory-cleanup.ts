import { jobIdOfSubject, planCleanup } from "../../kernel/cleanup-plan.ts";
import { decodeRecord } from "../../kernel/job-record-codec.ts";
import type { BrokerCleanupOptions, JobsCleanupReport } from "../broker-admin.ts";
import type { MemoryLeases } from "./memory-leases.ts";
import type { MemoryServerState } from "./memory-server.ts";

/**
 * What src/adapters/nats/job-cleanup.ts does on NATS, on the memory server,
 * with the same report: consumers and tasks of jobs that are over (or have
 * no record) go, lane jobs' tasks and held tasks too (a lane or delayed
 * subject's last token is its job); after the retention period the records, results and dead letters
 * of finished jobs go too. A submit still in progress is the reaper's.
 */
export const cleanupMemory = async (
  server: MemoryServerState,
  leases: MemoryLeases,
  options: BrokerCleanupOptions,
): Promise<JobsCleanupReport> => {
  server.assertOpen("cleanup");
  const dryRun = options.dryRun ?? false;
  const now = options.now ?? server.clock.now();
  const { tasks, delayed } = server;
  // The only await comes first: from here on nothing else runs, so the leftovers and the
  // records below are one consistent view (on NATS the leftovers are looked at first).
  const leased = await leases.list();
  const { over, expired, resultsGone, unleased } = planCleanup(
    server.records.live().map((entry) => decodeRecord(entry.value as string)),
    options.retentionMs,
    now,
    options.liveFlows,
  );
  const overSubject = (subject: string) => over(jobIdOfSubject(subject));
  const taskSubjects = tasks.subjects().filter(overSubject);
  // Its end's own removal failed: nothing else takes them off (no mover follows a queue without a live delayed job).
  const heldSubjects = delayed.subjects().filter(overSubject);
  const report: JobsCleanupReport = {
    dryRun,
    // A queue's lane is not a job's consumer: it stays (its jobs' tasks go with the subjects below).
    consumersDeleted: tasks.subjectConsumerNames().filter(over),
    tasksPurged: [...taskSubjects, ...heldSubjects],
    recordsRemoved: expired.map((r) => r.id),
    resultsPurged: server.results.subjects().filter((subject) => resultsGone(jobIdOfSubject(subject))),
    leasesRemoved: leased.filter(({ jobId }) => over(jobId)).map(({ jobId }) => jobId),
    leasesAdded: [],
  };
  const leaseless = unleased(new Set(leased.map((l) => l.jobId))).map((r) => r.id);
  if (dryRun) return { ...report, leasesAdded: leaseless };

  for (const name of report.consumersDeleted) tasks.deleteConsumer(name);
  for (const subject of taskSubjects) tasks.purge(subject);
  for (const subject of heldSubjects) delayed.purge(subject);
  for (const subject of report.resultsPurged) server.results.purge(subject);
  // As on NATS: the letters of expired jobs and of jobs with no record (stored after it went).
  for (const subject of server.deadLetters.subjects())
    if (resultsGone(jobIdOfSubject(subject))) server.deadLetters.purge(subject);
  // In this turn, as read above: after the awaits below, a redrive could have reopened one (on
  // NATS each goes at the revision the pass read).
  for (const record of expired) {
    const entry = server.records.get("job.record.delete", record.id);
    if (entry?.value !== undefined) server.records.delete("job.record.delete", record.id, entry.revision);
  }
  for (const { jobId, revision } of leased) if (over(jobId)) await leases.remove(jobId, revision);
  // As on NATS: never over a lease a job took meanwhile (a create).
  for (const jobId of leaseless) if (await leases.enrol(jobId)) report.leasesAdded.push(jobId);
  leases.purgeRunOutHeartbeats(now);
  return report;
};
