/**
 * jetstate's public API: nothing else is exported. See docs/architecture.md.
 */
export { createRuntime, type Runtime } from "./runtime.ts";
export type { RuntimeOptions, ConnectionOptions, InspectorLike } from "./options.ts";
export type { ConnectionHandle, ConnectionView } from "./connection.ts";
export type { ConnectionState, BackoffPolicy } from "./machines/connection.machine.ts";
export type { Jobs, JobHandle, JobSnapshot, TaskResult } from "./jobs.ts";
export type { SubmitRequest } from "./effects/plan-submit.ts";
export type { JobRecord, JobStatus, JobCounts, JobSettings } from "./effects/job-record.ts";
export type { Worker, WorkerOptions, WorkerStats, Task, TaskContext } from "./workers.ts";
export { defineQueue, type Queue, type Schema, type StandardSchema } from "./queue.ts";
export { PermanentError } from "./effects/task-outcome.ts";
export {
  ConnectionUnavailable,
  InvalidArgument,
  OperationTimeout,
  PermanentBrokerError,
  RevisionConflict,
  RuntimeStopped,
  TransientBrokerError,
  Retry,
  isTransient,
  type JetstateError,
  type RetryDecision,
} from "./errors.ts";
export type { Logger } from "./logger.ts";
