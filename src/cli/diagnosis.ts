import type { JobRecord, Runtime } from "../index.ts";
import { duration } from "./format.ts";

/** Why a job is not moving, and what to do about it. */
export interface Reason {
  readonly kind: "no-worker" | "dead-tasks" | "stalled";
  readonly message: string;
  readonly next?: string;
}

/**
 * Why a job that is not over is not moving (and, for one that ended, its
 * dead tasks): nobody pulls its queue, its tasks exhausted their
 * deliveries, or its supervisor found it stalled. Read from the stored
 * record, and presence from the workers' own announcements
 * (`rt.workers.list`): nothing is watched.
 */
export const explainStill = async (rt: Runtime, job: JobRecord, now = Date.now()): Promise<Reason[]> => {
  const reasons: Reason[] = [];
  const over = job.status === "succeeded" || job.status === "failed";
  if (!over) {
    const workers = await rt.workers.list({ queue: job.queue });
    if (workers.length === 0)
      reasons.push({
        kind: "no-worker",
        message: `no worker is alive on queue ${job.queue}`,
        next: `start a worker of queue ${job.queue} (rt.workers.start({ queue: "${job.queue}", ... })); \`jetstate-jobs workers ls\` lists the live ones`,
      });
  }
  const dead = job.counts.dead;
  if (dead > 0)
    reasons.push({
      kind: "dead-tasks",
      message: `${dead} dead task${dead === 1 ? "" : "s"} (exhausted their deliveries)`,
      next: `\`jetstate-jobs dlq ls ${job.id}\` for their errors, then \`jetstate-jobs dlq redrive ${job.id}\` once the cause is fixed`,
    });
  // The supervisor writes the stall into the record: its last write is when it stalled.
  if (job.status === "stalled")
    reasons.push({
      kind: "stalled",
      message: `stalled since ${new Date(job.updatedAt).toISOString()} (${duration(now - job.updatedAt)} ago)${job.reason ? `: ${job.reason}` : ""}`,
      next: "a stalled job resumes when a worker answers one of its tasks; it fails if stalledTimeoutMs is set and runs out",
    });
  return reasons;
};
