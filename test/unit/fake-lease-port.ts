/**
 * A `LeasePort` for the HTTP receipt tests: the job's record, its tasks and
 * the deliveries they are from come from the test (`jobs`); the answers are
 * kept in a map (`answers`), and every settle, claim and published result
 * is logged in order (`calls`), the oracle of what the leases sent.
 */
import type { LeasePort } from "../../src/adapters/http/task-leases.ts";
import type { RecordedAnswer } from "../../src/adapters/task-leasing.ts";
import { type JobRecord, SubmitPhase } from "../../src/kernel/job-record.ts";

/** A running job's record (`j1` on queue `q`, submit `s1`, ten tasks, a 10 s ack wait), `over` on top. */
export const runningRecord = (over: Partial<JobRecord> = {}): JobRecord => ({
  v: 1,
  id: "j1",
  queue: "q",
  status: "running",
  phase: SubmitPhase.committed,
  total: 10,
  submitId: "s1",
  settings: {
    maxFailures: 0,
    ackWaitMs: 10_000,
    maxDeliver: 3,
    backoffMs: [100, 500],
    stallAfterMs: 60_000,
    stalledTimeoutMs: 0,
  },
  counts: { done: 0, failed: 0, dead: 0 },
  createdAt: 1,
  updatedAt: 1,
  commitDeadline: 2,
  ...over,
});

type JobSide = Pick<LeasePort, "getRecord" | "activeJobs" | "fetchTasks" | "fetchLane" | "isDeliveryOf">;

export const fakeLeasePort = (jobs: JobSide) => {
  const calls: string[] = [];
  const answers = new Map<string, RecordedAnswer>();
  const port: LeasePort = {
    ...jobs,
    settle: async (settles) => {
      for (const s of settles) calls.push(`${s.action} ${s.ref}`);
    },
    claimAnswer: async (ref, digest) => {
      calls.push(`claim ${ref}`);
      answers.set(ref, { status: "pending", digest, at: 0 });
      return { claimed: true, revision: 1 };
    },
    answerOf: async (ref) => answers.get(ref),
    recordAnswer: async (ref, answer) => void answers.set(ref, answer),
    releaseAnswer: async (ref) => void answers.delete(ref),
    publishResults: async (_queue, jobId, body) => void calls.push(`publish ${jobId} ${body}`),
    storeDeadLetter: async () => undefined,
  };
  return { port, calls, answers };
};
