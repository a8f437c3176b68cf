import type { JobSnapshot, Runtime } from "../index.ts";
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
 * deliveries, or its supervisor found it stalled. Presence is read from the
 * workers' own announcements (`rt.workers.list`), not from the job.
 */
export const explainStill = async (rt: Runtime, job: JobSnapshot, now = Date.now()): Promise<Reason[]> => {
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
  if (job.dead > 0)
    reasons.push({
      kind: "dead-tasks",
      message: `${job.dead} dead task${job.dead === 1 ? "" : "s"} (exhausted their deliveries)`,
      next: `\`jetstate-jobs dlq ls ${job.id}\` for their errors, then \`jetstate-jobs dlq redrive ${job.id}\` once the cause is fixed`,
    });
  if (job.status === "stalled")
    reasons.push({
      kind: "stalled",
      message:
        job.lastProgressAt > 0
          ? `stalled: no task answered since ${new Date(job.lastProgressAt).toISOString()} (${duration(now - job.lastProgressAt)} ago)`
          : "stalled: no task answered since it started",
    });
  return reasons;
};
