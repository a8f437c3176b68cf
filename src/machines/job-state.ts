import type { SnapshotFrom } from "xstate";
import type { JobStatus } from "../kernel/job-record.ts";
import type { JobMachine } from "./job.machine.ts";

/** A job machine's state value: `running`, `stalled`, or `{ queuing | succeeded | failed: child }`. */
export type JobStateValue = SnapshotFrom<JobMachine>["value"];

/**
 * The job's status, its top state, read from the state value itself: XState's
 * `matches` builds a state value on each call, and a job's observers ask on
 * every snapshot (~5 % of what a 1-task job allocated went to it).
 */
export const jobStatusOf = (value: JobStateValue | JobStatus): JobStatus =>
  typeof value === "string"
    ? value
    : "queuing" in value
      ? "queuing"
      : "succeeded" in value
        ? "succeeded"
        : "failed";

/** Whether the job's end is recorded (`{ succeeded | failed: "recorded" }`), as `jobStatusOf` reads it. */
export const isRecordedValue = (value: JobStateValue): boolean =>
  typeof value === "object" &&
  (("succeeded" in value && value.succeeded === "recorded") ||
    ("failed" in value && value.failed === "recorded"));
