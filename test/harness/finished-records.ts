import type { JobRecord, JobSettings } from "../../src/kernel/job-record.ts";

/** A plain job's settings: the defaults of `effects/plan-submit.ts`, but a backoff of one step. */
export const defaultSettings: JobSettings = {
  maxFailures: 0,
  ackWaitMs: 30_000,
  maxDeliver: 5,
  backoffMs: [1000],
  stallAfterMs: 60_000,
  stalledTimeoutMs: 0,
};

/**
 * A job that ended long ago, as its supervisor left the record: what a
 * long-lived deployment keeps thousands of (until the retention period), and
 * what takeover and the reaper must not read on every pass.
 */
export const finishedRecord = (n: number, at: number, queue = "old"): JobRecord => ({
  v: 1,
  id: `old${n}x${at.toString(36)}`,
  queue,
  status: "succeeded",
  phase: "committed",
  total: 10,
  submitId: `s${n}`,
  settings: defaultSettings,
  counts: { done: 10, failed: 0, dead: 0 },
  createdAt: at,
  updatedAt: at,
  commitDeadline: at + 60_000,
  finishedAt: at,
});
