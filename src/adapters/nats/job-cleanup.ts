import { isFinished, jobIdOfSubject, planCleanup } from "../../kernel/cleanup-plan.ts";
import type { BrokerCleanupOptions, JobsCleanupReport } from "../broker-admin.ts";
import { laneConsumer, queueOfStream } from "../names.ts";
import { deleteLaneTasks, type NatsJobBroker } from "./job-broker.ts";
import type { NatsJobLeases } from "./job-leases.ts";
import type { NatsContext } from "./nats-context.ts";
import { isNotFound, streamInfoIfAny, streamNamesStartingWith } from "./streams.ts";
import { deleteSubjectMessages } from "./subject-messages.ts";

/**
 * Removes what finished jobs and crashed runs leave behind: consumers and
 * task messages of jobs that are over (or have no record), on every queue's
 * tasks stream, their held tasks on every queue's delayed stream (an end
 * whose own removal failed left them), and — after the retention period —
 * the records, results and dead letters of finished jobs.
 * A submit still in progress (`submitting`) is never touched: that is the
 * reaper's.
 */
export const cleanupJobs = async (
  core: NatsContext,
  broker: NatsJobBroker,
  leases: NatsJobLeases,
  options: BrokerCleanupOptions,
): Promise<JobsCleanupReport> => {
  const dryRun = options.dryRun ?? false;
  const now = options.now ?? Date.now();
  const n = broker.names;
  /** A task of a lane job (`<prefix>.tasks.<queue>.lane.<jobId>`), on its queue's stream. */
  const isLaneSubject = (stream: string, subject: string): boolean => {
    const queue = queueOfStream(stream, n.tasksStreamPrefix);
    return queue !== undefined && subject.startsWith(n.laneSubject(queue, ""));
  };
  const isHeldStream = (stream: string): boolean =>
    queueOfStream(stream, n.delayedStreamPrefix) !== undefined;
  // What is left is looked at before the records are read: a job's record is written before its
  // tasks and consumer, so every job seen here has its record in the list read after (unless it
  // is gone), and a job submitted during the pass is simply not seen. Read the other way round,
  // a job started between the two reads looked like one without a record. Its lease goes out
  // with its record: a lease without one is read again below.
  const seen = await core.run("cleanup.survey", async (nc) => {
    const { jsm } = await broker.handles(nc);
    // Every queue's tasks and delayed streams, whoever set them up: a queue no runtime uses any
    // more still holds leftovers, and nothing moves (nor drops) the held tasks of a queue no
    // runtime follows (api/movers.ts). One listing of the names for both.
    const streams = await streamNamesStartingWith(jsm, `${core.options.prefix}_`);
    const consumers: Array<{ stream: string; name: string }> = [];
    const subjects: Array<{ stream: string; subject: string; count: number; below: number }> = [];
    /** The subjects `stream` holds messages on, one a job: a read of O(jobs with some), none per record. */
    const survey = async (stream: string, filter: string) => {
      const info = await streamInfoIfAny(jsm, stream, { subjects_filter: filter });
      if (!info) return; // removed since it was listed
      const below = info.state.last_seq + 1;
      for (const [subject, count] of Object.entries(info.state.subjects ?? {}))
        if (count > 0) subjects.push({ stream, subject, count, below });
    };
    for (const stream of streams.filter((s) => queueOfStream(s, n.tasksStreamPrefix) !== undefined)) {
      for await (const consumer of jsm.consumers.list(stream))
        consumers.push({ stream, name: consumer.name });
      await survey(stream, `${core.options.prefix}.tasks.>`);
    }
    for (const stream of streams.filter(isHeldStream))
      await survey(stream, `${core.options.prefix}.delayed.>`);
    const results = await jsm.streams.info(n.resultsStream, {
      subjects_filter: `${core.options.prefix}.results.>`,
    });
    // The jobs that have dead letters: only theirs are purged below, not one purge per job
    // removed (on nats-server 2.9 a filtered purge costs up to ~0.6 ms of server CPU).
    // None when no dead letter was ever stored.
    const dead = await streamInfoIfAny(jsm, n.deadStream, {
      subjects_filter: `${core.options.prefix}.dead.>`,
    });
    return {
      consumers,
      subjects,
      resultSubjects: results.state.subjects ?? {},
      resultsBelow: results.state.last_seq + 1,
      deadSubjects: new Set(Object.keys(dead?.state.subjects ?? {})),
      deadBelow: (dead?.state.last_seq ?? 0) + 1,
    };
  });
  const leased = await leases.list();
  const { records, revisions, markers } = await broker.listRecordsAndMarkers();
  const { over, expired, resultsGone, unleased } = planCleanup(
    records,
    options.retentionMs,
    now,
    options.liveFlows,
  );
  const leaseless = unleased(new Set(leased.map((l) => l.jobId))).map((r) => r.id);
  // A submit writes its lease and its record together: a lease listed with no record of its job,
  // or with a finished one, may be a new submit's whose record (or whose take-over of a
  // rolled-back record of its key) landed while the records were read. Read again before it
  // goes (a read each, for the leases of jobs over only: leftovers, rare); a job not over now,
  // or not read, is left to the next pass.
  const leftovers: typeof leased = [];
  for (const lease of leased) {
    if (!over(lease.jobId)) continue;
    const removable = await broker.getRecord(lease.jobId).then(
      (found) => found === undefined || isFinished(found.record),
      () => false,
    );
    if (removable) leftovers.push(lease);
  }
  // The lane is every lane job's consumer, never one job's leftover.
  const consumers = seen.consumers.filter((c) => c.name !== laneConsumer && over(c.name));
  const subjects = seen.subjects.filter((s) => over(jobIdOfSubject(s.subject)));
  // The expired records read again before anything of theirs goes: one changed since the survey
  // (a redrive reopened it, a rolled-back submit's key taken over) is no longer the expired job,
  // and it stays, its answers and letters with it; the next pass looks again. Only the others'
  // go, each record last (a resubmit of its key must not read its answers) and at the revision
  // read here, never at one read later: deleted so, a job a redrive had reopened during the
  // pass went, its answers too, though `redrive()` had answered.
  const kept = new Set<string>();
  for (const { id } of dryRun ? [] : expired) {
    const read = await broker.getRecord(id).then(
      (found) => found?.revision,
      () => undefined,
    );
    if (read === undefined || read !== revisions.get(id)) kept.add(id);
  }
  const removable = expired.filter((r) => !kept.has(r.id));
  const report: JobsCleanupReport = {
    dryRun,
    consumersDeleted: consumers.map((c) => c.name),
    tasksPurged: subjects.map((s) => s.subject),
    // A real pass's: those whose delete went through (below).
    recordsRemoved: dryRun ? removable.map((r) => r.id) : [],
    resultsPurged: Object.keys(seen.resultSubjects).filter((subject) => {
      const jobId = jobIdOfSubject(subject);
      return resultsGone(jobId) && !kept.has(jobId);
    }),
    leasesRemoved: leftovers.map(({ jobId }) => jobId),
    // What a real pass adds is known once it ran: a job may have taken its lease meanwhile.
    leasesAdded: dryRun ? leaseless : [],
  };

  /** Consumers whose delete failed (not deleted meanwhile): not reported as deleted. */
  const consumersLeft = new Set<string>();
  if (!dryRun) {
    await core.run("cleanup", async (nc) => {
      const { jsm } = await broker.handles(nc);
      // Deleted meanwhile (the job's own end) or not now: the next cleanup finds what is left.
      // (A run tried again: what its try deletes is no longer left.)
      for (const { stream, name } of consumers)
        await jsm.consumers.delete(stream, name).then(
          () => consumersLeft.delete(`${stream}/${name}`),
          (error: unknown) => {
            if (isNotFound(error)) consumersLeft.delete(`${stream}/${name}`);
            else consumersLeft.add(`${stream}/${name}`);
          },
        );
      // Only what was there when it was looked at: a redrive's tasks published since stay.
      for (const { stream, subject, below } of subjects) {
        if (isHeldStream(stream)) continue; // below, each in a run of its own
        // A lane subject is never purged: the lane consumer would skip every lane task stored.
        if (isLaneSubject(stream, subject)) await deleteLaneTasks(jsm, stream, subject, below);
        else await jsm.streams.purge(stream, { filter: subject, seq: below });
      }
      // The letters of expired jobs, and of jobs with no record: a letter stored after its job's
      // record went (its advisory handled late) stayed for the stream's max age. Letters stored
      // after the survey wait for the next pass.
      for (const letters of seen.deadSubjects) {
        const jobId = jobIdOfSubject(letters);
        if (!resultsGone(jobId) || kept.has(jobId)) continue;
        await jsm.streams
          .purge(n.deadStream, { filter: letters, seq: seen.deadBelow })
          // No dead-letter stream (none ever stored) or not now: its max age removes them anyway.
          .catch(() => undefined);
      }
    });
  }

  if (!dryRun) {
    // Held tasks one by one too (a purge would move the queue's `due`, which has no filter, past
    // every held task of its live jobs), each job's in a run of its own with the deadline a job's
    // own removal has: a large job's, left by an end whose removal timed out, took the pass's
    // whole run past its deadline (50,000 held tasks), and the rest of the pass with it.
    // A job's results the same (a slow job's come one message each), before its record goes:
    // deleted one by one, never purged, for a purge moved the queue's results feed past every
    // result stored then, and a running job of the queue missed its own. Results would age out
    // by themselves (the stream's max age), but the record of a job with an idempotency key goes
    // here, maybe sooner (a shorter retention asked), and a resubmit of the key (same job id)
    // must not read the old job's results.
    const results = report.resultsPurged.map((subject) => ({
      stream: n.resultsStream,
      subject,
      count: seen.resultSubjects[subject] ?? 0,
      below: seen.resultsBelow,
    }));
    /** Jobs whose results are not all deleted: their records stay for the next pass. */
    const resultsLeft = new Set<string>();
    /** Subjects whose messages are not all deleted: not reported as purged. */
    const subjectsLeft = new Set<string>();
    for (const { stream, subject, count, below } of [
      ...subjects.filter((s) => isHeldStream(s.stream)),
      ...results,
    ])
      await core
        .run(
          "cleanup.messages",
          async (nc) =>
            deleteSubjectMessages((await broker.handles(nc)).jsm, stream, subject, { max: count, below }),
          { timeoutMs: Math.max(30_000, count * 2) },
        )
        // Not now: the next pass finds what is left.
        .catch(() => {
          subjectsLeft.add(subject);
          if (stream === n.resultsStream) resultsLeft.add(jobIdOfSubject(subject));
        });
    // Up to the revision seen: a lease written since (a resubmit of the key) stays.
    for (const { jobId, revision } of leftovers) await leases.remove(jobId, revision);
    // A job whose record was read without a lease: given a run-out one (never over one it took
    // meanwhile: a create), so takeover and the reaper find it. Then the markers older versions
    // left, each one more message every lease listing reads.
    for (const jobId of leaseless) if (await leases.enrol(jobId)) report.leasesAdded.push(jobId);
    await leases.purgeMarkers();
    for (const { id } of removable) {
      if (resultsLeft.has(id)) continue;
      const revision = revisions.get(id);
      // Changed since it was read again (a redrive landing now): it stays, the next pass looks again.
      if (revision === undefined) continue;
      const deleted = await broker.deleteRecord(id, revision).then(
        () => true,
        () => false,
      );
      if (deleted) report.recordsRemoved.push(id);
    }
    // The delete markers versions before this one left (their cleanup was a KV delete): one
    // message a job ever cleaned up, which every page and scan of the records read.
    await broker.removeRecordMarkers(markers);
    const purged = (subject: string) => !subjectsLeft.has(subject);
    return {
      ...report,
      consumersDeleted: consumers
        .filter((c) => !consumersLeft.has(`${c.stream}/${c.name}`))
        .map((c) => c.name),
      tasksPurged: report.tasksPurged.filter(purged),
      resultsPurged: report.resultsPurged.filter(purged),
    };
  }
  return report;
};
